"""Indexing with `None` (a new axis) after the first position, traced as the slice without it and expand_dims.

A custom layer's `weights[..., None]` or `mask[:, :, None]` is one StridedSlice with a new-axis mask in
TensorFlow; over open dimensions the TFLite converter refuses it ("TF Select ops: StridedSlice", or a return
type it cannot match), as it did nc95's attention pooling. The same index without its `None`s (a plain
StridedSlice, or nothing) and one EXPAND_DIMS per `None` are builtins at any size; the values are the same.
Indices holding tensors, booleans or lists are left to TensorFlow, and so is a tensor of unknown rank.
"""
from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable, Iterator


def new_axes(spec: tuple[Any, ...], rank: int) -> list[int] | None:
    """Output positions of the `None`s of an index of a rank-`rank` tensor, or None where the index is not made
    of ints, slices, one Ellipsis and Nones."""
    plain = (int, slice, type(Ellipsis), type(None))
    if any(isinstance(e, bool) or not isinstance(e, plain) for e in spec) or sum(e is Ellipsis for e in spec) > 1:
        return None
    consumed = sum(isinstance(e, (int, slice)) for e in spec)
    if consumed > rank:
        return None
    positions, out = [], 0
    for e in spec:
        if e is None:
            positions.append(out)
            out += 1
        elif e is Ellipsis:
            out += rank - consumed
        elif isinstance(e, slice):
            out += 1
    return positions


def expanding_getitem(getitem: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """tf.Tensor.__getitem__, with `None`s past the front expanded by tf.expand_dims."""
    @functools.wraps(getitem)
    def sliced(tensor: Any, spec: Any) -> Any:
        import tensorflow as tf

        items = spec if isinstance(spec, tuple) else (spec,)
        rank = tensor.shape.rank
        axes = new_axes(items, rank) if rank is not None and None in items else None
        if not axes or axes == list(range(len(axes))):  # no None, or only leading ones: TFLite converts those
            return getitem(tensor, spec)
        rest = tuple(e for e in items if e is not None)
        whole = all(e is Ellipsis or e == slice(None) for e in rest)
        out = tensor if whole else getitem(tensor, rest)
        for axis in axes:  # ascending output positions: each insertion leaves the earlier ones in place
            out = tf.expand_dims(out, axis)
        return out

    return sliced


@contextlib.contextmanager
def expanded_new_axes() -> Iterator[None]:
    """tf.Tensor indexing with a new axis past the front traced as expand_dims, for the duration of a trace."""
    from unittest import mock

    from tensorflow.python.framework import tensor as tensor_lib

    with mock.patch.object(tensor_lib.Tensor, "__getitem__", expanding_getitem(tensor_lib.Tensor.__getitem__)):
        yield
