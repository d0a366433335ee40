"""Keras' LSTM and GRU in forms the TorchScript and .pt2 edges keep over any length, masked or not.

Under the torch backend, Keras runs an unmasked LSTM / GRU with tanh / sigmoid through
`torch._VF.lstm` / `torch._VF.gru` (one op over the whole sequence) only on CUDA; on the CPU it loops
over time in Python (and a masked layer iterates over the batch), so a trace or torch.export bakes in
the traced length (and batch). While an edge traces, these layers run instead:
- unmasked, TorchScript (`fused_recurrent()`): Keras' own fused path, one `aten::lstm` / `aten::gru`
  op that runs any length;
- masked, TorchScript: a TorchScript-compiled loop over time (modelkit.converters._torch_loops), which
  the trace calls as a function, so the loop and its length stay dynamic;
- an open length or a mask, .pt2 (`scanned_recurrent()`): torch's higher-order `scan` op, which
  torch.export keeps with the length symbolic (the fused op it would decompose at the traced length);
  a fixed length without a mask takes the fused op.
The cell arithmetic is Keras' (LSTM gates i, f, c, o; GRU z, r, h with reset_after); a masked step
keeps the state and its output is the previous one (zeros with the layer's zero_output_for_mask), as in
Keras' loop. Other activations, no bias, `unroll=True` and GRU with `reset_after=False` keep Keras' loop
(refused for an open length, or unrolled by the `unrolled` route). Every artifact is verified against
Keras' own loop like any hop.
"""
from __future__ import annotations

import contextlib
import importlib
from typing import Any, Callable, Iterator


@contextlib.contextmanager
def fused_recurrent() -> Iterator[None]:
    """For torch.jit.trace: unmasked LSTM / GRU as torch's fused ops, masked ones as a scripted loop."""
    with _recurrent(_scripted, lambda inputs, mask: mask is not None):
        yield


@contextlib.contextmanager
def scanned_recurrent() -> Iterator[None]:
    """For torch.export: LSTM / GRU over an open length or with a mask as torch's scan, else fused."""
    with _recurrent(_scan, lambda inputs, mask: mask is not None or _open_length(inputs)):
        yield


@contextlib.contextmanager
def _recurrent(loop: Callable[..., Any], looped: Callable[[Any, Any], bool]) -> Iterator[None]:
    """Patch Keras' backend.lstm / gru: standard layers for which looped(inputs, mask) run `loop`, the
    other standard ones torch's fused op, the rest Keras' own code."""
    from unittest import mock  # the standard library's attribute patching, restored on exit

    import keras.src.backend as backend

    rnn = importlib.import_module("keras.src.backend.torch.rnn")
    keras_lstm, keras_gru = backend.lstm, backend.gru

    def lstm(inputs: Any, initial_state_h: Any, initial_state_c: Any, mask: Any, kernel: Any, recurrent_kernel: Any,
             bias: Any, activation: Any, recurrent_activation: Any, return_sequences: bool = False,
             go_backwards: bool = False, unroll: bool = False, batch_first: bool = True) -> Any:
        if not (batch_first and _standard(activation, recurrent_activation, unroll, bias)):
            return keras_lstm(inputs, initial_state_h, initial_state_c, mask, kernel, recurrent_kernel, bias,
                              activation, recurrent_activation, return_sequences, go_backwards, unroll, batch_first)
        weights = tuple(rnn.convert_to_tensor(t) for t in (kernel, recurrent_kernel, bias))
        if looped(inputs, mask):
            return _run(rnn, loop, "lstm", inputs, mask, (initial_state_h, initial_state_c), weights,
                        return_sequences, go_backwards)
        x, h, c = (rnn.convert_to_tensor(t).to(weights[0].dtype) for t in (inputs, initial_state_h, initial_state_c))
        return rnn._cudnn_lstm(x.flip(1) if go_backwards else x, h, c, *weights, return_sequences=return_sequences,
                               device=x.device)

    def gru(inputs: Any, initial_state: Any, mask: Any, kernel: Any, recurrent_kernel: Any, bias: Any,
            activation: Any, recurrent_activation: Any, return_sequences: bool = False, go_backwards: bool = False,
            unroll: bool = False, reset_after: bool = True) -> Any:
        if not (reset_after and _standard(activation, recurrent_activation, unroll, bias)):
            return keras_gru(inputs, initial_state, mask, kernel, recurrent_kernel, bias, activation,
                             recurrent_activation, return_sequences, go_backwards, unroll, reset_after)
        weights = tuple(rnn.convert_to_tensor(t) for t in (kernel, recurrent_kernel, bias))
        if looped(inputs, mask):
            return _run(rnn, loop, "gru", inputs, mask, (initial_state,), weights, return_sequences, go_backwards)
        x, h = (rnn.convert_to_tensor(t).to(weights[0].dtype) for t in (inputs, initial_state))
        return rnn._cudnn_gru(x.flip(1) if go_backwards else x, h, *weights, return_sequences=return_sequences,
                              device=x.device)

    with mock.patch.multiple(backend, lstm=lstm, gru=gru):
        yield


def _standard(activation: Any, recurrent_activation: Any, unroll: bool, bias: Any) -> bool:
    """tanh / sigmoid gates with a bias and no unroll: the arithmetic the fused op and the loops implement."""
    import torch
    from keras import ops
    from keras.src import activations

    return (not unroll and bias is not None
            and activation in (activations.tanh, torch.tanh, ops.tanh)
            and recurrent_activation in (activations.sigmoid, torch.sigmoid, ops.sigmoid))


def _open_length(inputs: Any) -> bool:
    import torch

    return len(inputs.shape) > 1 and isinstance(inputs.shape[1], torch.SymInt)


def _run(rnn: Any, loop: Callable[..., Any], cell: str, inputs: Any, mask: Any, states: tuple[Any, ...],
         weights: tuple[Any, ...], return_sequences: bool, go_backwards: bool) -> Any:
    """Keras' backend.lstm / gru contract (last output, outputs, final states) from `loop` over time-first
    inputs: the input projection of every step at once, the mask as (time, batch, 1), both reversed for a
    backward layer (whose outputs stay in the order it read them, as in Keras' loop)."""
    kernel, recurrent_kernel, bias = weights
    x = rnn.convert_to_tensor(inputs).to(kernel.dtype).transpose(0, 1)
    xw = x @ kernel
    keep = None
    if mask is not None:
        keep = rnn.convert_to_tensor(mask).bool()
        keep = (keep.squeeze(-1) if keep.dim() == 3 else keep).transpose(0, 1).unsqueeze(-1)
    if go_backwards:
        xw, keep = xw.flip(0), (None if keep is None else keep.flip(0))
    init = tuple(rnn.convert_to_tensor(s).to(kernel.dtype) for s in states)
    zero_masked = keep is not None and _zero_output_for_mask()
    outputs, final = loop(cell, xw, keep, init, recurrent_kernel, bias, zero_masked)
    outputs = outputs.transpose(0, 1)
    last = outputs[:, -1]
    return last, (outputs if return_sequences else last.unsqueeze(1)), list(final)


def _scripted(cell: str, xw: Any, keep: Any, init: tuple[Any, ...], recurrent_kernel: Any, bias: Any,
              zero_masked: bool) -> tuple[Any, tuple[Any, ...]]:
    from ._torch_loops import scripted

    out = scripted(cell)(xw, keep, *init, recurrent_kernel, bias, zero_masked)
    return out[0], tuple(out[1:])


def _scan(cell: str, xw: Any, keep: Any, init: tuple[Any, ...], recurrent_kernel: Any, bias: Any,
          zero_masked: bool) -> tuple[Any, tuple[Any, ...]]:
    import torch
    from torch._higher_order_ops.scan import scan

    from ._torch_loops import gru_step, lstm_step

    step = lstm_step if cell == "lstm" else gru_step
    # tensors made in the traced program (copies of the states and weights): under non-strict export, scan
    # cannot lift the module's parameters or Keras' initial states themselves ("Cannot access data pointer")
    init = tuple(s + 0 for s in init)
    rk, b = recurrent_kernel + 0, bias + 0

    def combine(carry: tuple[Any, ...], inp: list[Any]) -> tuple[tuple[Any, ...], Any]:
        new = step(carry, inp[0], rk, b)
        if len(inp) == 1:
            return new, new[0].clone()
        kept = tuple(torch.where(inp[1], n, c) for n, c in zip(new, carry))
        out = torch.where(inp[1], new[0], torch.zeros_like(new[0])) if zero_masked else kept[0]
        return kept, out.clone()

    final, outputs = scan(combine, init, [xw] if keep is None else [xw, keep], dim=0)
    return outputs, tuple(final)


def _zero_output_for_mask() -> bool:
    """zero_output_for_mask of the innermost recurrent layer whose call is on the stack (a Bidirectional
    returning sequences sets it on the layers it wraps)."""
    import keras

    from ._unroll import recurrent_callers

    rnn = next((layer for layer in recurrent_callers() if isinstance(layer, keras.layers.RNN)), None)
    return bool(getattr(rnn, "zero_output_for_mask", False))
