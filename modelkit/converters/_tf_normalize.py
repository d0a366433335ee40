"""`keras.ops.normalize` (UnitNormalization, Dot(normalize=True), a custom layer's L2 normalization) traced with its
bound applied before the reciprocal square root (nc124: NaN from TFLite for every zero vector).

Keras computes the L2 case as x * minimum(rsqrt(sum(x^2)), 1 / epsilon): a zero vector (a pixel whose channels a
ReLU zeroed, a padded step) takes rsqrt(0) = inf, and the minimum brings it back to 1 / epsilon. LiteRT's XNNPACK
delegate (the TFLite engine's default CPU kernels) computes the reciprocal square root of 0 and of subnormal numbers
as NaN, and the minimum keeps the NaN: the .tflite file answered NaN for every such row. The same bound applied
first, x * rsqrt(maximum(sum(x^2), epsilon^2)), is the same number for every sum (rsqrt decreases) and never takes
the root of anything below epsilon^2. An epsilon whose square is subnormal in float32 (below about 1e-19), other
orders and other dtypes keep Keras' own arithmetic. Every hop is verified against its source as always.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

_FLOAT32_TINY = 1.1754944e-38  # the smallest normal float32: XNNPACK's rsqrt is NaN below it


def bounded_first(keras_normalize: Callable[..., Any]) -> Callable[..., Any]:
    """keras.src.ops.nn._normalize with the L2 bound applied before rsqrt (see the module's docstring)."""
    def _normalize(x: Any, axis: Any = -1, order: Any = 2, epsilon: Any = None) -> Any:
        import tensorflow as tf
        from keras.src import backend

        bound = backend.epsilon() if epsilon is None else epsilon
        x_tf = tf.convert_to_tensor(x) if isinstance(x, (tf.Tensor, tf.Variable)) else None
        if (order != 2 or x_tf is None or x_tf.dtype != tf.float32
                or not x_tf.shape.rank or not isinstance(bound, (int, float)) or float(bound) ** 2 < _FLOAT32_TINY):
            return keras_normalize(x, axis=axis, order=order, epsilon=epsilon)
        square_sum = tf.reduce_sum(tf.square(x_tf), axis=axis, keepdims=True)
        return x_tf * tf.math.rsqrt(tf.maximum(square_sum, float(bound) ** 2))
    return _normalize


@contextlib.contextmanager
def bounded_normalize() -> Iterator[None]:
    """Patch Keras' `_normalize` (what ops.normalize and keras.utils.normalize call) while a model is traced."""
    from unittest import mock

    from keras.src.ops import nn

    with mock.patch.object(nn, "_normalize", bounded_first(nn._normalize)):
        yield
