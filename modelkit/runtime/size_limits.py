"""The largest size of an open dimension, checked before any engine runs.

A model with a table of positions runs up to the table's rows; past it OpenVINO returns garbage and TVM NaN
without a word, while the other engines raise their own errors. The converter finds such a limit on the ONNX graph
(modelkit.converters.size_limits) and records it in the manifest (extra.size_limits, {"input:axis": {"max": n,
"why": ...}}); Model.predict refuses a longer input on every engine with a ShapeError naming the input, the axis,
the limit and why.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ShapeError
from ..spec import Signature

SizeLimits = dict[tuple[str, int], tuple[int, str]]


def size_limits(m: Any, sig: Signature) -> SizeLimits:
    """{(input, axis): (largest size, why)} that manifest `m` records for the open axes of `sig`'s inputs."""
    stored = ((getattr(m, "extra", None) or {}).get("size_limits")) or {}
    open_dims = {(s.name, a) for s in sig.inputs for a, d in enumerate(s.shape) if a > 0 and d is None}
    out: SizeLimits = {}
    for key, entry in stored.items():
        name, _, axis = str(key).rpartition(":")
        if axis.isdigit() and (name, int(axis)) in open_dims and isinstance(entry, dict) \
                and isinstance(entry.get("max"), int):
            out[(name, int(axis))] = (entry["max"], str(entry.get("why") or "the model's limit"))
    return out


def check_sizes(limits: SizeLimits, inputs: dict[str, np.ndarray]) -> None:
    """Raise ShapeError when an input bound to the signature is longer than its recorded limit on an axis."""
    for (name, axis), (largest, why) in limits.items():
        arr = inputs.get(name)
        if arr is not None and arr.ndim > axis and arr.shape[axis] > largest:
            raise ShapeError(f"input '{name}': axis {axis} is {arr.shape[axis]}, past the largest size the model "
                             f"takes there, {largest} ({why})")
