"""Keras' float8 quantize-dequantize as float32 arithmetic while a model is exported.

A model quantized by Keras' own `model.quantize("float8")` (FP8 training: Dense and EinsumDense layers with delayed
scaling) rounds its inputs and kernels to float8 at inference by casting to `float8_e4m3fn` and back
(`keras.quantizers.quantize_and_dequantize`). No deployment runtime takes those casts on a CPU: onnxruntime refuses
the type, the TFLite converter and ExecuTorch's lowering fail (nc151). The same rounding is written with float32
operations every format has: the value's float8 quantum (a power of two picked by comparisons with the binade
bounds, the subnormal quantum below the smallest normal) and round-half-to-even to a multiple of it, exactly the
values the cast gives for every input Keras' clip lets through.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

# float8 type -> (mantissa bits, exponent of the smallest normal, exponent of the largest binade)
FLOAT8 = {"float8_e4m3fn": (3, -6, 8), "float8_e5m2": (2, -14, 15)}


@contextlib.contextmanager
def emulated_float8() -> Iterator[None]:
    """`keras.quantizers.quantize_and_dequantize` to a float8 type computed in float32 inside the block."""
    from unittest import mock

    try:
        from keras.src import quantizers
        from keras.src.quantizers import quantizers as quantizers_module
    except ImportError:  # pragma: no cover - another Keras layout: nothing to patch
        yield
        return
    own = getattr(quantizers_module, "quantize_and_dequantize", None)
    if own is None:  # pragma: no cover
        yield
        return
    patched = _quantize_and_dequantize(own)
    with mock.patch.object(quantizers_module, "quantize_and_dequantize", patched), \
            mock.patch.object(quantizers, "quantize_and_dequantize", patched):
        yield


def _quantize_and_dequantize(keras_own: Any) -> Any:
    def quantize_and_dequantize(inputs: Any, scale: Any, quantized_dtype: Any, compute_dtype: Any) -> Any:
        from keras import ops
        from keras.src.backend import standardize_dtype

        name = standardize_dtype(quantized_dtype)
        if name not in FLOAT8:
            return keras_own(inputs, scale, quantized_dtype, compute_dtype)
        import ml_dtypes

        top = float(ml_dtypes.finfo(name).max)
        x = ops.clip(ops.divide(inputs, ops.cast(scale, compute_dtype)), -top, top)
        x = rounded_to_float8(ops.cast(x, "float32"), name)
        return ops.multiply(ops.cast(x, compute_dtype), ops.cast(scale, compute_dtype))
    return quantize_and_dequantize


def rounded_to_float8(x: Any, name: str) -> Any:
    """float32 `x` (within the type's range) rounded to the nearest `name` value, ties to even, as float32."""
    from keras import ops

    mantissa, low, high = FLOAT8[name]
    size = ops.abs(x)
    quantum = ops.full_like(size, 2.0 ** (low - mantissa))  # subnormals and the smallest binade
    for e in range(low + 1, high + 1):
        quantum = ops.where(size >= 2.0 ** e, 2.0 ** (e - mantissa), quantum)
    return ops.sign(x) * ops.round(size / quantum) * quantum
