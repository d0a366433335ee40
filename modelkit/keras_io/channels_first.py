"""Channels-first convolutions under Keras' TensorFlow backend, on the CPU.

A model written with `data_format="channels_first"` (images as N, C, H, W: the PyTorch habit) runs under Keras'
torch and JAX backends, but TensorFlow's CPU kernels take channels-last only. Keras' TF backend transposes around
pooling, depthwise and separable convolutions on the CPU, not around `conv` and `conv_transpose`, so Conv2D raised
UnimplementedError ("The Conv2D op currently only supports the NHWC tensor format on the CPU") and the formats made
under TensorFlow (SavedModel, TFLite, tf2onnx's ONNX) of such a model were refused (nc144). And Keras' TF `add`
of a layer's bias to a channels-first map whose last side equals its channels added it along the wrong axis
(`_plain_channel_add`). While modelkit runs such a model under TensorFlow (`load_keras`), the two convolutions run
channels-last between two transposes, as Keras' own pooling does (the TFLite converter and tf2onnx fold the
transposes that meet), and such a sum is added by broadcasting. Every artifact is verified as ever.
"""
from __future__ import annotations

import inspect
import json
from typing import Any

MARK = "_modelkit_channels_last"  # set on the functions installed here


def needed(config: Any) -> bool:
    """Whether a saved model config names channels-first data anywhere."""
    return '"channels_first"' in json.dumps(config)


def install() -> None:
    """Keras' TF `conv` and `conv_transpose` taking channels-first inputs on the CPU; once per process (a process
    runs Keras under one backend, and channels-last calls go to Keras' own functions unchanged)."""
    try:
        from keras.src.backend.tensorflow import nn
    except ImportError:  # pragma: no cover - another Keras layout: nothing to patch
        return
    for name in ("conv", "conv_transpose"):
        own = getattr(nn, name, None)
        if own is not None and not getattr(own, MARK, False):
            setattr(nn, name, _channels_last(own))
    from keras.src.backend.tensorflow import numpy as tnp

    if not getattr(tnp.add, MARK, False):
        tnp.add = _plain_channel_add(tnp.add)


def _plain_channel_add(keras_add: Any) -> Any:
    """Keras' TF `add` taking a bias shaped (1, C, 1, ..., 1) the way it is shaped. Keras writes `x + bias` as
    `tf.nn.bias_add`, and picks its layout by comparing C with x's last size first: a channels-first map whose last
    side equals its channels (16 channels 16 wide: every convolution layer adds its bias so) had the bias added
    along its width instead, silently (nc144: a SeparableConv2D of 32 filters on maps 32 wide, 0.16 off). Such a
    sum goes to Keras' `add` with its operands swapped, which adds them by broadcasting: the same sum, exactly."""
    def add(x1: Any, x2: Any) -> Any:
        shape1, shape2 = getattr(x1, "shape", None), getattr(x2, "shape", None)
        if shape1 is not None and shape2 is not None and len(shape1) == len(shape2) > 2:
            sizes = [d for d in shape2]
            if sizes[1] not in (None, 1) and all(d == 1 for i, d in enumerate(sizes) if i != 1) \
                    and shape1[-1] == sizes[1]:
                return keras_add(x2, x1)
        return keras_add(x1, x2)

    setattr(add, MARK, True)
    add.__wrapped__ = keras_add
    return add


def _channels_last(keras_op: Any) -> Any:
    signature = inspect.signature(keras_op)

    def op(*args: Any, **kwargs: Any) -> Any:
        import tensorflow as tf
        from keras.src.backend import standardize_data_format

        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        if standardize_data_format(bound.arguments["data_format"]) != "channels_first":
            return keras_op(*args, **kwargs)
        x = tf.convert_to_tensor(bound.arguments["inputs"])
        rank = len(x.shape)
        bound.arguments["inputs"] = tf.transpose(x, [0, *range(2, rank), 1])
        bound.arguments["data_format"] = "channels_last"
        y = keras_op(*bound.args, **bound.kwargs)
        return tf.transpose(y, [0, rank - 1, *range(1, rank - 1)])

    setattr(op, MARK, True)
    op.__wrapped__ = keras_op
    return op
