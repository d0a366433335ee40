"""`same` padding over an open size, for TVM 0.27's ONNX importer.

tf2onnx writes a Keras convolution or pooling with `padding="same"` as ONNX `auto_pad="SAME_UPPER"`. The padding
that asks for depends on the input's size: the output is ceil(L / s) long, and the total padding
max((ceil(L / s) - 1) * s + k - L, 0) is split evenly (the extra one after), so with a stride over 1 the split moves
with L mod s (kernel 9, stride 4: 2 before at a length of 64, 4 at 65, 3 at 66). Over an open size the importer
fails: its Conv pads with numpy arithmetic on the symbolic size ("Cannot use and / or / not operator to Expr") and
its pooling calls int() on it. No ONNX rewrite says the same thing either, because the importer takes no
arithmetic on shape values (a computed Pad or Slice is refused, see slices.py).

So, while the importer runs (`symbolic_same_padding`), those two places are given the padding as TIR expressions
of the open size (before: `((L + 3) // 4 * 4 - L + 5) // 2` for kernel 9, stride 4; see same_pads), a pad before a
VALID convolution or pooling: the same numbers at every size, as the library's verification against onnxruntime
at other sizes shows. A static size
takes the importer's own path, unchanged. TVM is pinned (0.27), which is what makes replacing two of its
functions for the duration of one import sound; the replacement is undone on the way out, error or not.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any


@contextlib.contextmanager
def symbolic_same_padding() -> Iterator[None]:
    """The ONNX importer's `auto_pad="SAME_*"` Conv, MaxPool and AveragePool taking an open spatial size."""
    from tvm.relax.frontend.onnx import onnx_frontend as frontend

    importer_autopad = frontend.autopad

    def autopad(bb: Any, data: Any, strides: Sequence[int], kernel_shape: Sequence[int],
                dilations: Sequence[int] = (1, 1), pad_type: str = "constant", deconv: bool = False,
                mode: str = "SAME_UPPER", pad_value: float = 0.0) -> Any:
        if deconv or pad_type != "constant" or not _open(data):
            return importer_autopad(bb, data, strides, kernel_shape, dilations, pad_type, deconv, mode, pad_value)
        return _padded(bb, data, strides, kernel_shape, dilations, mode, pad_value)

    pools = {cls: cls.__dict__.get("_impl_v1") for cls in (frontend.MaxPool, frontend.AveragePool)}
    frontend.autopad = autopad
    for cls in pools:
        cls._impl_v1 = classmethod(_pool(frontend.Pool._impl_v1.__func__))
    try:
        yield
    finally:
        frontend.autopad = importer_autopad
        for cls, own in pools.items():
            if own is None:
                del cls._impl_v1
            else:
                cls._impl_v1 = own


def same_pads(size: Any, stride: int, kernel: int, mode: str = "SAME_UPPER") -> tuple[Any, Any]:
    """(before, after) padding of one axis of `size` (a TIR expression) that a VALID convolution or pooling reads as
    ONNX's SAME padding. The total is written so that the padded size simplifies to ceil(L / s) * s plus a constant
    (and so the output to ceil(L / s)): written as the importer writes it (a Select on L mod s, then a max), each
    layer's size nests the last one's several times and TVM's arithmetic hangs a few strided layers down (an image
    network took minutes in one pad). A kernel shorter than its stride pads up to ceil(L / s) * s: the windows read
    the same entries, and the output has the same length."""
    from tvm import tirx

    def const(v: int) -> Any:
        return tirx.const(v, getattr(size, "dtype", "int64"))

    total = tirx.floordiv(size + const(stride - 1), const(stride)) * const(stride) - size  # 0 .. s - 1
    spread = total + const(kernel - stride) if kernel >= stride else tirx.max(total + const(kernel - stride), const(0))
    if kernel >= stride:
        total = spread
    before = tirx.floordiv(spread, const(2)) if "UPPER" in mode else spread - tirx.floordiv(spread, const(2))
    return before, total - before


def _open(data: Any) -> bool:
    """Whether a spatial size (past N and C) of `data` is symbolic."""
    from tvm import tirx

    return not all(isinstance(d, (int, tirx.IntImm)) for d in list(data.ty.shape)[2:])


def _padded(bb: Any, data: Any, strides: Sequence[int], kernel_shape: Sequence[int], dilations: Sequence[int],
            mode: str, pad_value: float) -> Any:
    """`data` padded as SAME asks (N and C not), its sizes symbolic."""
    from tvm import topi

    before, after = [0, 0], [0, 0]
    for size, stride, kernel, dilation in zip(list(data.ty.shape)[2:], strides, kernel_shape, dilations):
        lo, hi = same_pads(size, stride, (kernel - 1) * dilation + 1, mode)
        before.append(lo)
        after.append(hi)
    return bb.emit_te(topi.nn.pad, data, before, after, pad_value)


def _pool(importer_pool: Any) -> Any:
    """The importer's pooling, given a SAME pooling over an open size as padding + VALID pooling: a max pooling
    padded with -inf, an average pooling as the average of the zero-padded input over the average of a zero-padded
    one (the count of real entries, as ONNX's count_include_pad=0 and Keras ask)."""

    def pool(cls: Any, bb: Any, inputs: list[Any], attr: dict[str, Any], params: Any) -> Any:
        import numpy as np
        from tvm import relax

        auto_pad = attr.get("auto_pad", b"NOTSET").decode("utf-8")
        data = inputs[0]
        if not auto_pad.startswith("SAME") or not _open(data):
            return importer_pool(cls, bb, inputs, attr, params)
        ndim = len(data.ty.shape)
        spec = (attr.get("strides", [1] * (ndim - 2)), attr["kernel_shape"], attr.get("dilations", [1] * (ndim - 2)))
        valid = {**attr, "auto_pad": b"VALID", "ceil_mode": 0}  # SAME's length is ceil(L / s) whatever ceil_mode
        if cls.name == "max_pool":
            dtype = str(data.ty.dtype)
            lowest = float("-inf") if "float" in dtype else int(np.iinfo(dtype).min)  # an int8 graph's MaxPool too
            padded = _padded(bb, data, *spec, auto_pad, lowest)
            return importer_pool(cls, bb, [padded], valid, params)
        summed = bb.emit(importer_pool(cls, bb, [_padded(bb, data, *spec, auto_pad, 0.0)], valid, params))
        if attr.get("count_include_pad", 0):
            return summed
        ones = bb.emit(relax.op.ones_like(data))
        counted = bb.emit(importer_pool(cls, bb, [_padded(bb, ones, *spec, auto_pad, 0.0)], valid, params))
        return relax.op.divide(summed, counted)

    return pool
