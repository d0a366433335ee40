"""Keras' torch `linspace` over a number of points that an open dimension gives, for torch.export.

A layer that builds coordinates from its input's size (nc160: CoordConv's `meshgrid(linspace(-1, 1, h),
linspace(-1, 1, w))` with h, w from `ops.shape`) calls torch.linspace, whose `steps` is a plain int to torch.export:
the export fixed the image's height and width to the traced ones ("layer 'add_coords' (AddCoords) turns it into the
traced size 8"), so pt2, ExecuTorch and torch.onnx ran at that size only. Here the points are an arange scaled by
the step, computed as torch's CPU kernel does (from the start for the first half, from the stop for the second),
over any number of points. Plain int counts, array bounds and the other options go to Keras' own.
"""
from __future__ import annotations

from typing import Any


def open_linspace(keras_own: Any) -> Any:
    """`keras_own` (keras.src.backend.torch.numpy.linspace) for a symbolic number of points between scalars."""
    def linspace(start: Any, stop: Any, num: Any = 50, endpoint: bool = True, retstep: bool = False,
                 dtype: Any = None, axis: int = 0) -> Any:
        import torch
        from keras.src.backend.common import dtypes
        from keras.src.backend.torch.core import get_device, to_torch_dtype

        scalars = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (start, stop))
        if isinstance(num, int) or not scalars or not endpoint or retstep or axis != 0:
            return keras_own(start, stop, num=num, endpoint=endpoint, retstep=retstep, dtype=dtype, axis=axis)
        dtype = to_torch_dtype(dtype or dtypes.result_type(type(start), type(stop), float))
        at = torch.arange(num, dtype=dtype, device=get_device())
        last = at[-1:]  # num - 1 as a tensor: a symbolic float of the count is one ExecuTorch's lowering fixes
        step = (stop - start) / torch.clamp(last, min=1)
        return torch.where(at < (last + 1) / 2, start + at * step, stop - (last - at) * step)
    return linspace
