"""Keras' complex FFTs (`keras.ops.fft`, `fft2`, `ifft2`, on a (real, imaginary) pair) as products with the DFT's
cosine and sine tables, for the exporters of both backends (nc164: FNet's token mixing, the real part of `fft2`).

Under TensorFlow they trace to Complex and FFT / FFT2D: tf2onnx writes a Complex op that does not exist ("No Op
registered for Complex"), TFLite has no builtin. Under torch, torch.export keeps complex tensors, whose
aten.complex ExecuTorch does not lower, and torch.onnx writes a DFT that TVM's importer refuses. Along an axis of n
points, X = W x with W[k, j] = cos(2 pi kj / n) - i sin(2 pi kj / n) (kj taken mod n first, so the angle keeps its
precision): Xr = C xr + S xi, Xi = C xi - S xr; the inverse conjugates W and divides by n. A known n gives
constant tables (up to MAX_DFT points, as the real FFT's lowering); an open one (FNet's token count) tables computed
from a count of the axis, so any length runs. The sums are the same up to float32 rounding (the FFT's own order
differs), and each hop's check judges them. Inputs that are not two float tensors of one shape go to Keras' own.
"""
from __future__ import annotations

from typing import Any

from ._tf_fft import MAX_DFT


def dft_ops(fft: Any, fft2: Any, ifft2: Any) -> dict[str, Any]:
    """{"fft": ..., "fft2": ..., "ifft2": ...}: the backend's own three (Keras' functions) as table products."""
    def make(keras_own: Any, axes: tuple[int, ...], inverse: bool) -> Any:
        def transform(x: Any) -> Any:
            pair = _pair(x)
            if pair is None or any(not _takes(pair[0], a) for a in axes):
                return keras_own(x)
            real, imag = pair
            for axis in axes:
                real, imag = _along(real, imag, axis, inverse)
            return real, imag
        return transform

    return {"fft": make(fft, (-1,), False), "fft2": make(fft2, (-2, -1), False), "ifft2": make(ifft2, (-2, -1), True)}


def _pair(x: Any) -> tuple[Any, Any] | None:
    from keras import ops

    if not isinstance(x, (tuple, list)) or len(x) != 2:
        return None
    real, imag = (ops.convert_to_tensor(v) for v in x)
    if tuple(real.shape) != tuple(imag.shape) or len(real.shape) < 2 or real.dtype != imag.dtype \
            or "float" not in str(real.dtype):
        return None
    return real, imag


def _takes(x: Any, axis: int) -> bool:
    n = x.shape[axis]
    return n is None or not isinstance(n, int) or 0 < n <= MAX_DFT


def _along(real: Any, imag: Any, axis: int, inverse: bool) -> tuple[Any, Any]:
    """The DFT (or inverse) of real + i imag along `axis` (-1 or -2), as products with the tables."""
    from keras import ops

    if axis == -2:
        real, imag = ops.swapaxes(real, -1, -2), ops.swapaxes(imag, -1, -2)
    cos, sin, n = _tables(real)
    sign = 1.0 if inverse else -1.0  # X = (C + sign i S) x
    # an einsum with tables of an open size: TF's matmul of them wrote a Tensordot whose Reshape TVM's importer
    # refused ("Reshape requires the input new shape to be Shape")
    product = ops.matmul if isinstance(n, float) else (lambda a, b: ops.einsum("...n,nk->...k", a, b))
    out_real = product(real, cos) - sign * product(imag, sin)
    out_imag = product(imag, cos) + sign * product(real, sin)
    if inverse:
        out_real, out_imag = out_real / n, out_imag / n
    if axis == -2:
        out_real, out_imag = ops.swapaxes(out_real, -1, -2), ops.swapaxes(out_imag, -1, -2)
    return out_real, out_imag


def _tables(x: Any) -> tuple[Any, Any, Any]:
    """(cos, sin, n) for x's last axis: constants for a known size, else computed from a count of the axis."""
    import numpy as np
    from keras import ops

    n = x.shape[-1]
    if isinstance(n, int):
        k = np.arange(n)
        angle = 2 * np.pi * (np.outer(k, k) % n) / n
        return (ops.convert_to_tensor(np.cos(angle), x.dtype), ops.convert_to_tensor(np.sin(angle), x.dtype),
                float(n))
    # ones along the axis, reduced from x's shape (not a size the trace fixes; an index into the batch wrote a
    # Squeeze of it that TVM's importer refuses)
    ones = ops.max(ops.ones_like(x, dtype="int32"), axis=tuple(range(len(x.shape) - 1)))
    k = ops.cumsum(ones) - 1
    count = ops.sum(ones)
    angle = ops.cast(ops.mod(k[:, None] * k[None, :], count), x.dtype) * (2 * np.pi) / ops.cast(count, x.dtype)
    return ops.cos(angle), ops.sin(angle), ops.cast(count, x.dtype)
