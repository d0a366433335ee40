"""Keras' recurrent loop, unrolled over a fixed number of steps, for the routes that cannot take Keras' own.

Keras runs every recurrent layer (LSTM, GRU, SimpleRNN, RNN(cell), ConvLSTM, either direction of a
Bidirectional) through `keras.src.backend.rnn`. Its loops do not convert everywhere: under TensorFlow it
is a while loop over TensorLists, which TFLite's builtin ops express only at a fixed batch; under torch,
the masked loop iterates over the batch (`list(output)`), which torch.export fixes. Keras' own
`unroll=True` path is no way out: with a mask, a backward layer and zeroed masked outputs (a
Bidirectional returning sequences) it zeroes the wrong steps (it applies the unreversed mask to reversed
outputs).

`unrolled_rnn()` swaps in `rnn` below while a model is traced: the same step function, the same masking
as Keras' while loop (a masked step keeps the previous state; its output is the previous output, or
zeros with zero_output_for_mask; a backward layer reverses the mask with the inputs), written with
keras.ops over a Python loop of `steps` iterations: slices, the cell's own ops, `where` and a stack.
The batch stays symbolic; the number of steps must be static (`steps is None` raises DynamicLengthError).
Under TensorFlow it also turns off the fused cuDNN kernels (GPU only) so every layer takes this loop.
The routes verify the result against the original model like any other hop.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Iterator


class DynamicLengthError(ValueError):
    """A recurrent layer got inputs whose number of time steps is not static: nothing to unroll."""

    def __init__(self, layer: str, reason: str):
        super().__init__(f"layer {layer}: {reason}")
        self.layer, self.reason = layer, reason


@dataclass
class Unrolled:
    """What the unrolled loop did while a model was traced: the step counts (one per layer call), and the
    first layer it could not unroll (an open time axis), which ran Keras' own loop instead."""

    steps: list[int] = field(default_factory=list)
    dynamic: DynamicLengthError | None = None


@contextlib.contextmanager
def unrolled_rnn(fused: bool = True) -> Iterator[Unrolled]:
    """Within the block, Keras' recurrent layers run modelkit's unrolled loop; a layer whose number of steps
    is open runs Keras' loop and is recorded (Unrolled.dynamic: the caller refuses the model, or ignores
    traces it does not convert, e.g. the default signatures a SavedModel adds). fused=False also turns off
    the backend's fused LSTM/GRU kernels (TensorFlow's cuDNN path), which would bypass the loop."""
    from keras.src import backend

    seen = Unrolled()
    saved = (backend.rnn, backend.lstm, backend.gru)

    def patched(*args: Any, **kwargs: Any) -> Any:
        try:
            return rnn(*args, calls=seen.steps, **kwargs)
        except DynamicLengthError as exc:
            seen.dynamic = seen.dynamic or exc
            return saved[0](*args, **kwargs)

    backend.rnn = patched
    if not fused:
        backend.lstm = backend.gru = _not_fused
    try:
        yield seen
    finally:
        backend.rnn, backend.lstm, backend.gru = saved


def _not_fused(*args: Any, **kwargs: Any) -> Any:
    raise NotImplementedError  # Keras' layers then run the generic loop (backend.rnn)


def rnn(step_function: Any, inputs: Any, initial_states: Any, go_backwards: bool = False, mask: Any = None,
        constants: Any = None, unroll: bool = False, input_length: Any = None, time_major: bool = False,
        zero_output_for_mask: bool = False, return_all_outputs: bool = True,
        calls: list[int] | None = None) -> tuple[Any, Any, Any]:
    """keras.src.backend.rnn's contract (last output, outputs, final states), unrolled with keras.ops."""
    from keras import ops, tree

    axis = 0 if time_major else 1
    flat_inputs = tree.flatten(inputs)
    steps = flat_inputs[0].shape[axis]
    if steps is None:
        raise DynamicLengthError(_calling_layer(), "its input has an open time axis")
    if mask is None and input_length is not None and not isinstance(input_length, int):
        raise DynamicLengthError(_calling_layer(), "per-sample input lengths without a mask")
    if calls is not None:
        calls.append(int(steps))
    sequences = [ops.unstack(x, num=steps, axis=axis) for x in flat_inputs]
    masks = None
    if mask is not None:
        mask = mask if mask.dtype == "bool" else ops.cast(mask, "bool")
        if len(mask.shape) == 3:
            mask = ops.squeeze(mask, axis=-1)
        masks = ops.unstack(mask, num=steps, axis=axis)  # each (batch,)
    order = range(steps - 1, -1, -1) if go_backwards else range(steps)
    states = tuple(initial_states)
    extra = tuple(constants or ())
    prev_output: list[Any] | None = None
    outputs: list[list[Any]] = []
    out_struct: Any = None
    for t in order:
        step_input = tree.pack_sequence_as(inputs, [s[t] for s in sequences])
        output, new_states = step_function(step_input, states + extra)
        out_struct = output
        flat_out = tree.flatten(output)
        if masks is not None:
            keep = masks[t]
            if prev_output is None:
                prev_output = [ops.zeros_like(o) for o in flat_out]
            fill = [ops.zeros_like(o) for o in flat_out] if zero_output_for_mask else prev_output
            flat_out = [ops.where(_expand(keep, o), o, f) for o, f in zip(flat_out, fill)]
            flat_states = [ops.where(_expand(keep, n), n, p)
                           for n, p in zip(tree.flatten(new_states), tree.flatten(states))]
            new_states = tree.pack_sequence_as(new_states, flat_states)
            prev_output = flat_out
        states = tuple(new_states) if isinstance(new_states, (list, tuple)) else (new_states,)
        outputs.append(flat_out)
    last = tree.pack_sequence_as(out_struct, outputs[-1])
    kept = outputs if return_all_outputs else outputs[-1:]
    stacked = [ops.stack([o[i] for o in kept], axis=axis) for i in range(len(kept[0]))]
    return last, tree.pack_sequence_as(out_struct, stacked), states


def _expand(keep: Any, like: Any) -> Any:
    """A (batch,) mask as (batch, 1, ..., 1), broadcasting against `like` in `where`."""
    from keras import ops

    for _ in range(len(like.shape) - 1):
        keep = ops.expand_dims(keep, -1)
    return keep


def recurrent_layers(model: Any) -> list[Any]:
    """The Keras recurrent layers of a model, in order (a Bidirectional stands for the two it wraps)."""
    import keras

    flatten = getattr(model, "_flatten_layers", None)
    layers = list(flatten(include_self=False, recursive=True)) if flatten else list(getattr(model, "layers", []))
    wrapped = {id(inner) for layer in layers if isinstance(layer, keras.layers.Bidirectional)
               for inner in (layer.forward_layer, layer.backward_layer)}
    return [layer for layer in layers if isinstance(layer, (keras.layers.RNN, keras.layers.Bidirectional))
            and id(layer) not in wrapped]


def _calling_layer() -> str:
    """"'name' (Class)" of the outermost recurrent layer (a Bidirectional before the RNN it wraps) whose call
    is on the stack, for naming it in a refusal."""
    layers = recurrent_callers()
    return f"'{layers[-1].name}' ({type(layers[-1]).__name__})" if layers else "(unknown)"


def recurrent_callers() -> list[Any]:
    """The Keras recurrent layers (RNN, Bidirectional) whose call is on the stack, innermost first."""
    import keras

    return layer_callers((keras.layers.RNN, keras.layers.Bidirectional))


def layer_callers(kinds: Any) -> list[Any]:
    """The Keras layers of the classes `kinds` whose call is on the stack, innermost first (each once in a row)."""
    import inspect

    found: list[Any] = []
    frame = inspect.currentframe()
    while frame is not None:
        layer = frame.f_locals.get("self")
        if isinstance(layer, kinds) and (not found or found[-1] is not layer):
            found.append(layer)
        frame = frame.f_back
    return found
