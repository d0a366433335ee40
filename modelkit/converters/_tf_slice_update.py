"""`keras.ops.slice_update` at constant start indices, as gathers and a select.

Keras' TensorFlow backend writes a slice with XLA's DynamicUpdateSlice, which tf2onnx maps to no ONNX op ("No Op
registered for XlaDynamicUpdateSlice", nc159: a custom layer zeroing its first token's features). The TFLite
converter takes it, tf2onnx does not, and the torch route's ONNX (a ScatterND over an open length) is one TVM could
not compile. At start indices given as Python ints, each axis the update does not span is gathered to the input's length
(position i takes the update's row i - start, clipped) and the block is selected by comparing positions with its
bounds: Range, Gather, comparisons and Where / Select, which every format has at any size (a Pad to the input's
open length was one TVM's importer refused: "Dynamic pads are not supported yet"). Start indices held in tensors
stay Keras' own.
"""
from __future__ import annotations

from typing import Any


def selected_slice_update(keras_own: Any) -> Any:
    """`keras_own` (keras.src.backend.tensorflow.core.slice_update) as gathers and a select at int start indices."""
    def slice_update(inputs: Any, start_indices: Any, updates: Any) -> Any:
        import tensorflow as tf

        starts = list(start_indices) if isinstance(start_indices, (list, tuple)) else []
        inputs = tf.convert_to_tensor(inputs)
        updates = tf.convert_to_tensor(updates, dtype=inputs.dtype)
        if (not starts or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in starts)
                or len(starts) != inputs.shape.rank or updates.shape.rank != inputs.shape.rank
                or any(n is not None and u is not None and s + u > n
                       for s, u, n in zip(starts, updates.shape, inputs.shape))):
            return keras_own(inputs, start_indices, updates)
        rank, shape, sizes = len(starts), tf.shape(inputs), tf.shape(updates)
        placed, inside = updates, None
        for d, s in enumerate(starts):
            if s == 0 and inputs.shape[d] is not None and inputs.shape[d] == updates.shape[d]:
                continue  # the update spans this axis
            at = tf.range(shape[d])
            placed = tf.gather(placed, tf.clip_by_value(at - s, 0, sizes[d] - 1), axis=d)  # update row per position
            here = tf.reshape((at >= s) & (at < s + sizes[d]), [-1 if i == d else 1 for i in range(rank)])
            inside = here if inside is None else inside & here
        return placed if inside is None else tf.where(inside, placed, inputs)
    return slice_update

