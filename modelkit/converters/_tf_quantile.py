"""`keras.ops.quantile` / `median` under TensorFlow with its index arithmetic in float32.

Keras' TF backend computes the indices of a quantile in float64 ("else we get the wrong index if the array is huge
along axis"). Over a reduced axis of open length (a median over time of a sequence of any length) that arithmetic
stays in the graph, and TFLite has no float64 Mul, Sub or Ceil builtins: the model needed Flex ops (nc79). Here the
same indices are computed in float32, exact while the reduced axis has fewer than 2**24 elements, and float64
inputs keep Keras' own. The result is Keras': sorted values gathered at the lower / higher / nearest index, their
midpoint or their linear interpolation, NaN where a reduced slice holds one, q's dims first. Over axes of known
size the indices are constants (TVM computed them from the ONNX Shape as integers: a median of 20 values gave the
10th, not the mean of the 10th and 11th).
"""
from __future__ import annotations

import math
from typing import Any


def float32_quantile(original: Any) -> Any:
    """keras.src.backend.tensorflow.numpy._quantile (x already cast to its float compute dtype, axis a list or
    None) with float32 index arithmetic for float32 and narrower inputs; `original` for float64."""
    def quantile(x: Any, q: Any, axis: Any = None, method: str = "linear", keepdims: bool = False) -> Any:
        import tensorflow as tf

        if x.dtype == tf.float64:
            return original(x, q, axis=axis, method=method, keepdims=keepdims)
        q = tf.cast(q, tf.float32)
        rank = len(x.shape)
        axes = list(range(rank)) if axis is None else sorted(a % rank for a in axis)
        others = [i for i in range(rank) if i not in axes]
        y = tf.transpose(x, others + axes)
        sizes = [x.shape[a] for a in axes]
        known = math.prod(sizes) if None not in sizes else -1  # a known length makes the indices constants
        y = tf.reshape(y, tf.concat([tf.shape(y)[:len(others)], [known]], 0))
        ordered = tf.sort(y, axis=-1)
        n = known if known > 0 else tf.shape(y)[-1]
        pos = (tf.cast(n, tf.float32) - 1.0) * q

        def at(index: Any) -> Any:
            return tf.gather(ordered, tf.clip_by_value(tf.cast(index, tf.int32), 0, n - 1), axis=-1)

        if method == "lower":
            out = at(tf.floor(pos))
        elif method == "higher":
            out = at(tf.math.ceil(pos))
        elif method == "nearest":
            out = at(tf.round(pos))
        elif method == "midpoint":
            out = 0.5 * (at(tf.floor(pos)) + at(tf.math.ceil(pos)))
        else:  # linear, as Keras: the index above, the one below it, and the weight of each
            higher = tf.clip_by_value(tf.cast(tf.math.ceil(pos), tf.int32), 0, n - 1)
            lower = tf.maximum(higher - 1, 0)
            higher = tf.minimum(lower + 1, n - 1)
            fraction = tf.cast(tf.cast(higher, tf.float32) - pos, x.dtype)
            out = at(higher) * (1 - fraction) + at(lower) * fraction
        nan = tf.reduce_any(tf.not_equal(y, y), axis=-1)  # NaN != NaN: no IsNan op needed
        nan = tf.reshape(nan, tf.concat([tf.shape(nan), tf.ones([len(q.shape)], tf.int32)], 0))
        out = tf.where(nan, tf.constant(float("nan"), out.dtype), out)
        if keepdims:
            for i in axes:
                out = tf.expand_dims(out, i)
        q_rank = len(q.shape)
        if q_rank == 0:
            return out
        dims = len(out.shape)
        return tf.transpose(out, list(range(dims - q_rank, dims)) + list(range(dims - q_rank)))

    return quantile
