"""The one traced TensorFlow function both TF-based edges (ONNX, SavedModel) export.

Inputs keep the Keras input names and a dynamic batch dimension; outputs come back in the Keras
output order, so each edge can name them after the Keras outputs.
"""
from __future__ import annotations

from typing import Any

from ..spec import Signature


def serving_function(model: Any, sig: Signature, as_dict: bool) -> tuple[Any, list[Any]]:
    """(tf.function, input TensorSpecs) calling the model in inference mode."""
    import keras
    import tensorflow as tf

    specs = [tf.TensorSpec(s.shape, tf.as_dtype(s.dtype), name=s.name) for s in sig.inputs]
    dict_inputs = isinstance(getattr(model, "_inputs_struct", None), dict)
    names = sig.output_names

    def call(*args: Any) -> Any:
        if dict_inputs:
            feed: Any = dict(zip(sig.input_names, args))
        else:
            feed = list(args) if len(args) > 1 else args[0]
        outs = keras.tree.flatten(model(feed, training=False))
        if as_dict:
            return {n: tf.identity(o, name=n) for n, o in zip(names, outs)}
        return [tf.identity(o) for o in outs]

    return tf.function(call, input_signature=specs, autograph=False), specs
