"""Keras' TimeDistributed as one call of its layer on the batch and time axes folded together, while a model is
traced (nc130, a clip classifier: TimeDistributed(Conv2D) over an open number of frames).

Keras runs the wrapped layer once per time step: a Python loop of T copies when T is fixed, and
`backend.vectorized_map` over `arange(T)` when it is open. Over an open T, TensorFlow's vectorized map (pfor)
traced a graph that failed at T = 1 in the SavedModel itself ("StridedSlice ... pfor/while") and in tf2onnx's
ONNX model (a Conv fed the wrong channels), and under torch the map fixed T at the traced size, so torch.export,
the TorchScript trace and ExecuTorch refused the open axis. The layer here sees x reshaped from (batch, T, ...)
to (batch * T, ...), and its output is reshaped back to (batch, T, ...): one call, any T, the same numbers for
every layer that treats the samples of a batch independently (every built-in one at inference). Kept as Keras
has it: a mask the wrapped layer reads. Every hop is verified against the Keras model.
"""
from __future__ import annotations

import contextlib
from typing import Any


def folded_time_steps() -> contextlib.AbstractContextManager[None]:
    """TimeDistributed.call as one call on the folded batch and time axes inside the block."""
    from ._keras_patch import layer_call_patch

    def make(own: Any) -> Any:
        def call(self: Any, inputs: Any, training: Any = None, mask: Any = None) -> Any:
            if mask is not None and self.layer._call_has_mask_arg:  # noqa: SLF001 - Keras' own test in its call
                return own(self, inputs, training=training, mask=mask)
            return _folded(self.layer, inputs, training)
        return call

    return layer_call_patch("rnn.time_distributed", "TimeDistributed", make)


def _folded(layer: Any, inputs: Any, training: Any) -> Any:
    """layer(x as (batch * T, ...)) as (batch, T, ...)."""
    from keras import ops

    shape = ops.shape(inputs)
    kwargs = {"training": training} if layer._call_has_training_arg else {}  # noqa: SLF001
    out = layer.call(ops.reshape(inputs, (-1, *shape[2:])), **kwargs)
    return ops.reshape(out, (shape[0], shape[1], *ops.shape(out)[1:]))
