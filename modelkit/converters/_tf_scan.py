"""`keras.ops.scan` traced as one TensorFlow while loop that ONNX (tf2onnx) and TFLite's builtin ops express.

Keras' TensorFlow backend keeps scan's carry in a one-slot TensorArray that the loop reads and writes at every
step. tf2onnx cannot turn such a TensorList into ONNX ("No Op registered for TensorListReserve"), and the TFLite
converter lowers TensorLists only at a fixed batch, so a custom layer built on `ops.scan` (a linear recurrence, a
moving average, a state-space layer) converted to SavedModel alone. Here the carry is a plain loop variable and
the per-step outputs grow by concatenation, as modelkit's recurrent loop does (modelkit.converters._tf_loop):
the first step runs before the loop (it fixes the outputs' structure), the others in the loop; any batch, any
length >= 1. The numbers are scan's own, and every hop is verified against the Keras model as usual.
"""
from __future__ import annotations

from typing import Any


def lowered_scan(keras_scan: Any) -> Any:
    """keras.src.backend.tensorflow.core.scan's contract as the loop above; what it does not cover (no `xs`, a
    `length` that disagrees with them) is left to Keras' own scan."""
    def scan(f: Any, init: Any, xs: Any = None, length: Any = None, reverse: bool = False, unroll: Any = 1) -> Any:
        import tensorflow as tf
        from keras import tree

        if xs is None or not callable(f) or length is not None:
            return keras_scan(f, init, xs=xs, length=length, reverse=reverse, unroll=unroll)
        flat_xs = [tf.convert_to_tensor(x) for x in tree.flatten(xs)]
        steps = tf.shape(flat_xs[0])[0]

        def step(t: Any, carry: list[Any]) -> tuple[list[Any], Any]:
            index = steps - 1 - t if reverse else t
            new, ys = f(tree.pack_sequence_as(init, carry), tree.pack_sequence_as(xs, [x[index] for x in flat_xs]))
            return [tf.convert_to_tensor(c) for c in tree.flatten(new)], ys

        carry0 = [tf.convert_to_tensor(c) for c in tree.flatten(init)]
        carry1, ys1 = step(tf.constant(0), carry0)
        ys_struct = ys1
        first = [] if ys1 is None else [tf.expand_dims(y, 0) for y in tree.flatten(ys1)]
        n_carry = len(carry1)

        def body(t: Any, *loop_vars: Any) -> tuple[Any, ...]:
            new, ys = step(t, list(loop_vars[:n_carry]))
            grown = [tf.concat([acc, tf.expand_dims(y, 0)] if not reverse else [tf.expand_dims(y, 0), acc], 0)
                     for acc, y in zip(loop_vars[n_carry:], [] if ys is None else tree.flatten(ys))]
            return (t + 1, *new, *grown)

        invariants = (tf.TensorShape([]), *(_loose(a, b) for a, b in zip(carry0, carry1)),
                      *(tf.TensorShape([None, *a.shape[1:]]) for a in first))
        result = tf.while_loop(lambda t, *_: t < steps, body, (tf.constant(1), *carry1, *first),
                               shape_invariants=invariants)
        carry, ys = list(result[1:1 + n_carry]), list(result[1 + n_carry:])
        return tree.pack_sequence_as(init, carry), None if ys_struct is None else tree.pack_sequence_as(ys_struct, ys)
    return scan


def _loose(before: Any, after: Any) -> Any:
    """The carry's shape invariant: the dims the initial carry and the first step's carry agree on, others open."""
    import tensorflow as tf

    if before.shape.rank is None or after.shape.rank is None or before.shape.rank != after.shape.rank:
        return tf.TensorShape(None)
    return tf.TensorShape([a if a == b else None for a, b in zip(before.shape.as_list(), after.shape.as_list())])
