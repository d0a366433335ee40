"""`keras.ops.scan` over an open length as torch's higher-order `scan`, for the .pt2 edge.

Under the torch backend Keras' scan is a Python loop over the leading axis of `xs`, so torch.export bakes
in the traced length: a registered layer that scans its input over an open sequence length (an
exponential moving average, a hand-written recurrence) was refused for pt2. While the pt2 edge exports
(`scanned_ops()`), a scan whose length is symbolic runs as torch's `scan` op instead, which torch.export
keeps with the length symbolic, as it does for Keras' LSTM / GRU (modelkit.converters._torch_rnn).

Under non-strict export, torch's scan cannot read the module's parameters from inside its step ("Cannot
access data pointer"). So the variables of the layer calling scan, and of the layers and variables the
step function closes over, are read inside the step through a `keras.StatelessScope` that maps each to a
copy made in the traced program. A scan of a fixed length, one given only `length=`, or one torch's scan
cannot trace (a step reading another layer's weights, a step with side effects) keeps Keras' loop: the
edge then refuses the open length as before, naming the layer. The artifact is verified against Keras'
own loop like any hop.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator


@contextlib.contextmanager
def scanned_ops() -> Iterator[None]:
    """For torch.export: keras.ops.scan over a symbolic length as torch's scan, else Keras' loop."""
    from unittest import mock  # the standard library's attribute patching, restored on exit

    import keras.src.backend.torch.core as core

    keras_scan = core.scan

    def scan(f: Callable[..., Any], init: Any, xs: Any = None, length: Any = None, reverse: bool = False,
             unroll: Any = 1) -> Any:
        if xs is None or not _symbolic_length(core, xs):
            return keras_scan(f, init, xs, length, reverse, unroll)
        try:
            return _torch_scan(core, f, init, xs, reverse, _caller_layer())
        except Exception:  # noqa: BLE001 - torch's scan could not trace this step: Keras' loop, refused as before
            return keras_scan(f, init, xs, length, reverse, unroll)

    import keras.src.backend as backend

    keras_rnn = backend.rnn

    def rnn(step_function: Callable[..., Any], inputs: Any, initial_states: Any, go_backwards: bool = False,
            mask: Any = None, constants: Any = None, unroll: bool = False, input_length: Any = None,
            time_major: bool = False, zero_output_for_mask: bool = False, return_all_outputs: bool = True) -> Any:
        args = (step_function, inputs, initial_states, go_backwards, mask, constants, unroll, input_length, time_major,
                zero_output_for_mask, return_all_outputs)
        layer = _caller_layer()
        if mask is not None or constants or unroll or _plain_cell(layer) is None \
                or not _symbolic_length(core, _time_first(inputs, time_major)):
            return keras_rnn(*args)
        try:
            return _scanned_rnn(core, layer, inputs, initial_states, go_backwards, time_major, return_all_outputs)
        except Exception:  # noqa: BLE001 - torch's scan could not trace this cell: Keras' loop, refused as before
            return keras_rnn(*args)

    with mock.patch.object(core, "scan", scan), mock.patch.object(backend, "rnn", rnn):
        yield


def _plain_cell(layer: Any) -> Any:
    """The cell of a keras.layers.RNN calling backend.rnn whose own `call` computes a step (not Keras' LSTM / GRU
    cells, run as _torch_rnn does, nor StackedRNNCells, whose call runs other layers), else None."""
    import keras

    cell = getattr(layer, "cell", None) if isinstance(layer, keras.layers.RNN) else None
    if cell is None or isinstance(cell, (keras.layers.StackedRNNCells, keras.layers.LSTMCell, keras.layers.GRUCell)):
        return None
    return cell if not any(isinstance(v, keras.layers.Layer) for v in vars(cell).values()) else None


def _time_first(inputs: Any, time_major: bool) -> Any:
    import torch

    return inputs if time_major or not isinstance(inputs, torch.Tensor) else inputs.transpose(0, 1)


def _scanned_rnn(core: Any, layer: Any, inputs: Any, initial_states: Any, go_backwards: bool, time_major: bool,
                 return_all_outputs: bool) -> tuple[Any, Any, list[Any]]:
    """Keras' backend.rnn contract (last output, outputs, final states) for an unmasked keras.layers.RNN of a user's
    cell, from torch's scan over time. The step calls the cell's own `call` (torch's scan traces it with dynamo,
    which cannot trace Keras' Layer.__call__); a backward layer reads the steps reversed and keeps its outputs in the
    order it read them, as Keras' loop does."""
    import inspect

    import torch

    cell = layer.cell
    kwargs = {"training": False} if "training" in inspect.signature(cell.call).parameters else {}
    x = _time_first(inputs, time_major)
    x = torch.flip(x, [0]) if go_backwards else x

    def step(states: list[Any], x_t: Any) -> tuple[list[Any], Any]:
        output, new_states = cell.call(x_t, list(states), **kwargs)
        return list(new_states) if isinstance(new_states, (list, tuple)) else [new_states], output

    final, outputs = _torch_scan(core, step, list(initial_states), x, False, layer)
    last = outputs[-1]
    outputs = outputs if return_all_outputs else outputs[-1:]
    return last, outputs if time_major else outputs.transpose(0, 1), list(final)


def _symbolic_length(core: Any, xs: Any) -> bool:
    import torch
    from keras.src import tree

    leaves = [core.convert_to_tensor(t) for t in tree.flatten(xs)]
    return bool(leaves) and len(leaves[0].shape) > 0 and isinstance(leaves[0].shape[0], torch.SymInt)


def _torch_scan(core: Any, f: Callable[..., Any], init: Any, xs: Any, reverse: bool, caller: Any) -> Any:
    """Keras' scan contract (final carry, stacked outputs) from torch's scan over the leading axis."""
    import keras
    import torch
    from keras.src import tree
    from torch._higher_order_ops.scan import scan

    # torch's scan takes and returns pytrees (tuples, lists, dicts) as Keras' does. Copies made in the traced
    # program: scan cannot lift the module's own parameters or tensors made outside it
    init = tree.map_structure(lambda t: core.convert_to_tensor(t) + 0, init)
    xs = tree.map_structure(core.convert_to_tensor, xs)

    def combine(carry: Any, x: Any) -> tuple[Any, Any]:
        c, y = f(carry, x)
        c = tree.map_structure(core.convert_to_tensor, c)
        if y is None:  # Keras stacks zeros like each leaf of the carry then
            return c, [torch.zeros_like(t) for t in tree.flatten(c)]
        return c, tree.map_structure(lambda t: core.convert_to_tensor(t).clone(), y)

    mapping = [(v, v.value + 0) for v in _read_variables(f, caller)]
    with keras.StatelessScope(state_mapping=mapping):
        return scan(combine, init, xs, dim=0, reverse=reverse)


def _caller_layer() -> Any:
    """The innermost Keras layer whose call is on the stack (the one calling keras.ops.scan), or None."""
    import keras

    from ._unroll import layer_callers

    return next(iter(layer_callers(keras.layers.Layer)), None)


def _read_variables(f: Callable[..., Any], caller: Any) -> list[Any]:
    """The Keras variables the step may read: the calling layer's, and those of the layers and variables
    the step function is bound to or closes over."""
    import keras

    owners = [caller, getattr(f, "__self__", None)]
    for cell in getattr(f, "__closure__", None) or ():
        with contextlib.suppress(ValueError):  # an empty cell
            owners.append(cell.cell_contents)
    found: dict[int, Any] = {}
    for owner in owners:
        if isinstance(owner, keras.layers.Layer):
            found.update((id(v), v) for v in owner.variables)
        elif isinstance(owner, keras.Variable):
            found[id(owner)] = owner
    return list(found.values())
