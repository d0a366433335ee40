"""`keras.ops.searchsorted` over a 1-D sorted sequence, and `keras.ops.digitize` over constant increasing bins, written
as comparisons and a count, for every exporter (nc82: a layer binning each feature among fixed quantile edges; nc90: a
risk bucket inside a model: TF's Bucketize has no ONNX op, torch's aten.bucketize no ExecuTorch kernel).

TensorFlow writes it as UpperBound / LowerBound (tf2onnx: "No Op registered", TFLite: no builtin); torch as
aten.searchsorted, which torch.onnx could not translate and ExecuTorch has no kernel for; and Keras' torch code
passes `out_int32=len(sequence) <= ...`, a tensor under torch.jit.trace (TypeError). The insertion index of v is the
number of entries below it (side "left": s < v; "right": s <= v): the same int32 for a sorted sequence, with one
comparison per entry (edges and bins are short). N-D sequences go to Keras' own code.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable


def counted_searchsorted(backend: str) -> contextlib.AbstractContextManager[None]:
    """Patch `keras.src.backend.<backend>.numpy.searchsorted` for the duration of an export."""
    from ._keras_patch import backend_patch

    return backend_patch(backend, "numpy", "searchsorted", counted)


def counted_digitize(backend: str) -> contextlib.AbstractContextManager[None]:
    """Patch `keras.src.backend.<backend>.numpy.digitize` for the duration of an export."""
    from ._keras_patch import backend_patch

    return backend_patch(backend, "numpy", "digitize", counted_bins)


def counted_bins(keras_own: Callable[..., Any]) -> Callable[..., Any]:
    """Keras' digitize(x, bins): for constant increasing bins, the number of bins <= x (TF's Bucketize and torch's
    bucketize(right=True) alike; nc90: a risk bucket computed inside a model); anything else by `keras_own`."""

    def digitize(x: Any, bins: Any) -> Any:
        import numpy as np
        from keras import ops

        try:
            edges = np.asarray(bins, dtype=np.float64)
        except (TypeError, ValueError):  # bins held in a tensor of the trace
            return keras_own(x, bins)
        if edges.ndim != 1 or not edges.size or np.any(np.diff(edges) < 0):
            return keras_own(x, bins)
        x = ops.convert_to_tensor(x)
        x = x if "float" in str(x.dtype) else ops.cast(x, "float32")
        return _count_below(ops.convert_to_tensor(edges.astype(np.float32), dtype=x.dtype), x, "right")

    return digitize


def counted(keras_own: Callable[..., Any]) -> Callable[..., Any]:
    """Keras' searchsorted signature: a 1-D sequence by counting, anything else by `keras_own`."""

    def searchsorted(sorted_sequence: Any, values: Any, side: str = "left") -> Any:
        from keras import ops

        if len(ops.shape(sorted_sequence)) != 1 or side not in ("left", "right"):
            return keras_own(sorted_sequence, values, side=side)
        return _count_below(ops.convert_to_tensor(sorted_sequence), ops.convert_to_tensor(values), side)

    return searchsorted


def _count_below(seq: Any, values: Any, side: str) -> Any:
    """The insertion index of each value in the 1-D sorted `seq`: the entries below it ("left": s < v) or not above it
    ("right": s <= v; digitize's bucket), as int32."""
    from keras import ops

    v = ops.expand_dims(values, -1)
    below = ops.less(seq, v) if side == "left" else ops.less_equal(seq, v)
    return ops.sum(ops.cast(below, "int32"), axis=-1)
