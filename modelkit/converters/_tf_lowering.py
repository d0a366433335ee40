"""Lowerings patched in while the TensorFlow-based edges (ONNX, SavedModel, TFLite) trace a Keras model.

Keras' TensorFlow backend builds the causal attention mask of `MultiHeadAttention(...,
use_causal_mask=True)` as `band_part(ones((T, S)))[None, None]`. With a dynamic sequence length the
StridedSlice that adds the two axes has no TFLite builtin lowering, so the TFLite converter refuses the
model. `lowerings()` swaps in the same mask built from two ranges compared with broadcasting
(RANGE, RESHAPE, GREATER_EQUAL: builtins at any length). The values are identical, and every hop is
verified against its source like any other. All three edges trace under it, because they share one
traced function per process (modelkit.converters._tf_function).
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator


@contextlib.contextmanager
def lowerings() -> Iterator[None]:
    """Patch Keras' TF causal-mask lowering for the duration of a trace (a no-op on other Keras versions)."""
    try:
        from keras.src.backend.tensorflow import nn
    except ImportError:  # pragma: no cover - another Keras layout: nothing to patch
        yield
        return
    original = getattr(nn, "_apply_masks", None)
    if original is None or not hasattr(nn, "_get_large_negative"):
        yield
        return
    nn._apply_masks = _apply_masks
    try:
        yield
    finally:
        nn._apply_masks = original


def _apply_masks(logits: Any, mask: Any, is_causal: bool) -> Any:
    """keras.src.backend.tensorflow.nn._apply_masks with the causal mask as `row >= col` of two ranges."""
    import tensorflow as tf
    from keras.src.backend.tensorflow import nn

    if mask is None and not is_causal:
        return logits
    combined = tf.ones_like(logits, dtype="bool")
    if mask is not None:
        combined = tf.logical_and(combined, mask)
    if is_causal:
        shape = tf.shape(logits)  # (batch, heads, T, S)
        rows = tf.reshape(tf.range(shape[2]), [1, 1, -1, 1])
        cols = tf.reshape(tf.range(shape[3]), [1, 1, 1, -1])
        combined = tf.logical_and(combined, rows >= cols)
    return tf.where(combined, logits, nn._get_large_negative(logits.dtype))
