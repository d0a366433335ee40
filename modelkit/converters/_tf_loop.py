"""Keras' recurrent loop as one TensorFlow while loop over an open length, in TFLite builtin ops.

Keras' own loop under TensorFlow collects its outputs in TensorLists, which TFLite's builtin ops express
only at a fixed batch and length. `looped_rnn()` swaps in `rnn` below while a model is traced: the first
step runs before the loop (it fixes the output's structure), the others in a `tf.while_loop` whose
outputs grow by concatenation, so the converter writes a builtin WHILE whose tensors TFLite resizes
per call: any batch, any length >= 1, one artifact. The step function, the masking (a masked step keeps
the previous state; its output is the previous output, or zeros with zero_output_for_mask) and the
direction (a backward layer reads the steps from the end and returns them in the order it read them)
are those of modelkit.converters._unroll, which unrolls a fixed length instead. The route verifies the
artifact against Keras' own loop at several lengths, like any hop.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator


@contextlib.contextmanager
def looped_rnn() -> Iterator[None]:
    """Within the block, Keras' recurrent layers (TensorFlow backend) run the while loop below, and the
    fused cuDNN kernels are off so that every layer takes it."""
    from unittest import mock  # the standard library's attribute patching, restored on exit

    from keras.src import backend

    from ._unroll import _not_fused

    with mock.patch.multiple(backend, rnn=rnn, lstm=_not_fused, gru=_not_fused):
        yield


def rnn(step_function: Any, inputs: Any, initial_states: Any, go_backwards: bool = False, mask: Any = None,
        constants: Any = None, unroll: bool = False, input_length: Any = None, time_major: bool = False,
        zero_output_for_mask: bool = False, return_all_outputs: bool = True) -> tuple[Any, Any, Any]:
    """keras.src.backend.rnn's contract (last output, outputs, final states) as one tf.while_loop."""
    import tensorflow as tf
    from keras import tree

    axis = 0 if time_major else 1
    flat_in = tree.flatten(inputs)
    steps = tf.shape(flat_in[0])[axis]
    extra = tuple(constants or ())
    keep_mask = None
    if mask is not None:
        keep_mask = tf.cast(mask, tf.bool)
        if len(keep_mask.shape) == 3:
            keep_mask = tf.squeeze(keep_mask, axis=-1)

    def step(t: Any, prev: list[Any] | None, states: tuple[Any, ...]) -> tuple[Any, list[Any], tuple[Any, ...]]:
        index = steps - 1 - t if go_backwards else t
        x = tree.pack_sequence_as(inputs, [tf.gather(f, index, axis=axis) for f in flat_in])
        nested = tuple(tree.pack_sequence_as(tuple(initial_states), list(states)))  # a stack of cells: per cell
        output, new_states = step_function(x, nested + extra)
        flat_out = tree.flatten(output)
        new_flat = tree.flatten(new_states)
        if keep_mask is not None:
            keep = tf.gather(keep_mask, index, axis=0 if time_major else 1)
            fill = [tf.zeros_like(o) for o in flat_out] if zero_output_for_mask or prev is None else prev
            flat_out = [tf.where(_expand(keep, o), o, f) for o, f in zip(flat_out, fill)]
            new_flat = [tf.where(_expand(keep, n), n, p) for n, p in zip(new_flat, tree.flatten(states))]
        return output, flat_out, tuple(new_flat)

    out_struct, first, states = step(tf.constant(0), None, tuple(tree.flatten(tuple(initial_states))))
    acc = [tf.expand_dims(o, axis) for o in first]
    n_out = len(first)

    def body(t: Any, *loop_vars: Any) -> tuple[Any, ...]:
        acc_, prev, st = loop_vars[:n_out], list(loop_vars[n_out:2 * n_out]), loop_vars[2 * n_out:]
        _, out, new = step(t, prev, tuple(st))
        grown = [tf.concat([a, tf.expand_dims(o, axis)], axis) for a, o in zip(acc_, out)]
        return (t + 1, *grown, *out, *new)

    invariants = (tf.TensorShape([]), *(_open(a, 2) for a in acc), *(_open(o, 1) for o in first),
                  *(_open(s, 1) for s in states))
    result = tf.while_loop(lambda t, *_: t < steps, body, (tf.constant(1), *acc, *first, *states),
                           shape_invariants=invariants)
    outputs, last, final = result[1:1 + n_out], result[1 + n_out:1 + 2 * n_out], result[1 + 2 * n_out:]
    if not return_all_outputs:
        outputs = [tf.expand_dims(o, axis) for o in last]
    states_out = tree.pack_sequence_as(tuple(initial_states), list(final))
    return (tree.pack_sequence_as(out_struct, list(last)), tree.pack_sequence_as(out_struct, list(outputs)),
            list(states_out))


def _open(t: Any, leading: int) -> Any:
    """t's static shape with its first `leading` dimensions open (batch, and time for the outputs)."""
    import tensorflow as tf

    return tf.TensorShape([None] * leading + list(t.shape[leading:]))


def _expand(keep: Any, like: Any) -> Any:
    """A (batch,) mask as (batch, 1, ..., 1), broadcasting against `like` in `where`."""
    import tensorflow as tf

    return tf.reshape(keep, tf.concat([tf.shape(keep), tf.ones([len(like.shape) - 1], tf.int32)], 0))
