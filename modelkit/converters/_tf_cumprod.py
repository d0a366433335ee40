"""`keras.ops.cumprod` over floats under TensorFlow without the Cumprod op (nc88: a forecaster's decayed-product
feature). TFLite has no Cumprod builtin, and tf2onnx writes it as a Loop, which TVM's importer and OpenVINO's
older frontends refuse.

Over an axis of known length n it is a log-depth scan: log2(n) rounds of y * (y shifted k steps, ones shifted
in), k = 1, 2, 4, ...: the same products in another order (a few ulps apart), for any values, zeros, signs and
infinities alike. Over an open axis (a series of any length) it is the sign times exp(cumsum(log|x|)): zeros give 0
from log(0) = -inf, the sign is the parity of the negatives counted so far; its relative error grows with the sum of
|log|x|| (about 1e-7 of it in float32), which parity checks like any hop. Integers keep TensorFlow's Cumprod.
"""
from __future__ import annotations

from typing import Any


def stepped_cumprod(keras_cumprod: Any) -> Any:
    """keras.src.backend.tensorflow.numpy.cumprod for floats as above; other dtypes by `keras_cumprod`."""
    def cumprod(x: Any, axis: Any = None, dtype: Any = None) -> Any:
        import tensorflow as tf

        t = tf.convert_to_tensor(x, dtype=dtype)
        if not t.dtype.is_floating or not t.shape.rank:
            return keras_cumprod(x, axis=axis, dtype=dtype)
        if axis is None:
            t, axis = tf.reshape(t, [-1]), 0
        axis %= t.shape.rank
        n = t.shape[axis]
        return _scanned(t, axis, n) if n is not None else _by_logs(t, axis)
    return cumprod


def _scanned(x: Any, axis: int, n: int) -> Any:
    import tensorflow as tf

    head = (slice(None),) * axis
    k = 1
    while k < n:
        ones = tf.ones_like(x[head + (slice(0, k),)])
        x = x * tf.concat([ones, x[head + (slice(0, n - k),)]], axis=axis)
        k *= 2
    return x


def _by_logs(x: Any, axis: int) -> Any:
    import tensorflow as tf

    magnitude = tf.exp(tf.math.cumsum(tf.math.log(tf.abs(x)), axis=axis))
    negatives = tf.math.cumsum(tf.cast(x < 0, x.dtype), axis=axis)
    return (1.0 - 2.0 * tf.math.floormod(negatives, 2.0)) * magnitude
