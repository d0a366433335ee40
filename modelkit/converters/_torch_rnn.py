"""Keras' LSTM and GRU as torch's fused recurrent ops, for the TorchScript and .pt2 edges.

Under the torch backend, Keras runs an unmasked LSTM / GRU with tanh / sigmoid through
`torch._VF.lstm` / `torch._VF.gru` (one op over the whole sequence) only on CUDA; on the CPU it loops
over time in Python, and a trace or torch.export then bakes in the traced length. `fused_recurrent()`
lets Keras take its own fused path on the CPU while the edges trace, so the artifact holds one
`aten::lstm` / `aten::gru` op that runs any length. Masked layers, other activations, `unroll=True`
and GRU with `reset_after=False` keep Keras' loop (and are refused for an open length, or unrolled by
the `unrolled` route). The artifact is verified against Keras' own loop like any hop.
"""
from __future__ import annotations

import contextlib
import importlib
from typing import Any, Iterator


@contextlib.contextmanager
def fused_recurrent() -> Iterator[None]:
    """Within the block, Keras' torch backend runs eligible LSTM / GRU layers as torch's fused ops."""
    from unittest import mock  # the standard library's attribute patching, restored on exit

    import keras.src.backend as backend

    rnn = importlib.import_module("keras.src.backend.torch.rnn")
    with mock.patch.multiple(backend, lstm=_lstm(rnn, backend.lstm), gru=_gru(rnn, backend.gru)):
        yield


def _eligible(activation: Any, recurrent_activation: Any, mask: Any, unroll: bool, bias: Any) -> bool:
    import torch
    from keras import ops
    from keras.src import activations

    return (mask is None and not unroll and bias is not None
            and activation in (activations.tanh, torch.tanh, ops.tanh)
            and recurrent_activation in (activations.sigmoid, torch.sigmoid, ops.sigmoid))


def _lstm(rnn: Any, keras_lstm: Any) -> Any:
    def lstm(inputs: Any, initial_state_h: Any, initial_state_c: Any, mask: Any, kernel: Any,
             recurrent_kernel: Any, bias: Any, activation: Any, recurrent_activation: Any,
             return_sequences: bool = False, go_backwards: bool = False, unroll: bool = False,
             batch_first: bool = True) -> Any:
        if not batch_first or not _eligible(activation, recurrent_activation, mask, unroll, bias):
            return keras_lstm(inputs, initial_state_h, initial_state_c, mask, kernel, recurrent_kernel, bias,
                              activation, recurrent_activation, return_sequences, go_backwards, unroll, batch_first)
        kernel, recurrent_kernel, bias = (rnn.convert_to_tensor(t) for t in (kernel, recurrent_kernel, bias))
        x, h, c = (rnn.convert_to_tensor(t).to(kernel.dtype) for t in (inputs, initial_state_h, initial_state_c))
        if go_backwards:
            x = x.flip(1)
        return rnn._cudnn_lstm(x, h, c, kernel, recurrent_kernel, bias, return_sequences=return_sequences,
                               device=x.device)
    return lstm


def _gru(rnn: Any, keras_gru: Any) -> Any:
    def gru(inputs: Any, initial_state: Any, mask: Any, kernel: Any, recurrent_kernel: Any, bias: Any,
            activation: Any, recurrent_activation: Any, return_sequences: bool = False, go_backwards: bool = False,
            unroll: bool = False, reset_after: bool = True) -> Any:
        if not reset_after or not _eligible(activation, recurrent_activation, mask, unroll, bias):
            return keras_gru(inputs, initial_state, mask, kernel, recurrent_kernel, bias, activation,
                             recurrent_activation, return_sequences, go_backwards, unroll, reset_after)
        kernel, recurrent_kernel, bias = (rnn.convert_to_tensor(t) for t in (kernel, recurrent_kernel, bias))
        x, h = (rnn.convert_to_tensor(t).to(kernel.dtype) for t in (inputs, initial_state))
        if go_backwards:
            x = x.flip(1)
        return rnn._cudnn_gru(x, h, kernel, recurrent_kernel, bias, return_sequences=return_sequences,
                              device=x.device)
    return gru
