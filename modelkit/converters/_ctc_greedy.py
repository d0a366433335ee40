"""Greedy CTC decoding (`keras.ops.ctc_decode(..., strategy="greedy")`) as elementwise ops, cumulative sums and a
masked max, for the exporters (nc163: an OCR model shipped with its decode layer).

Keras' TensorFlow backend calls tf.nn.ctc_greedy_decoder, whose CTCGreedyDecoder has no TFLite builtin, and
whose sparse result it densifies. Its torch backend reads the frame count as a Python int (`torch.arange(max_length)`)
and compacts the labels with argsort and take_along_dim, so torch.export fixed the line width ("layer 'decoded'
(GreedyCTC) turns it into the traced size 10"). Here, for both, the same answer: each frame's best class; a frame
emits it when it lies within its row's length, is not the blank (`mask_index`) and, with `merge_repeated`, differs
from the frame before (a blank between two equal labels keeps both, as TensorFlow's kernel does); the k-th emitted
label goes to slot k (a cumulative count; a max over the frames), the slots left are -1; the score is minus the sum
of the best values over the row's frames. Beam search goes to Keras' own code.
"""
from __future__ import annotations

from typing import Any


def greedy_ctc_decode(keras_own: Any, backend: str) -> Any:
    """`keras_own` (the `backend`'s `ctc_decode`, "tensorflow" or "torch") with its greedy strategy written as
    above. A negative `mask_index` counts from the last class under TensorFlow; Keras' torch code compares the
    labels with it as given, so there no class is the blank, and so here."""
    def ctc_decode(inputs: Any, sequence_lengths: Any, strategy: str = "greedy", beam_width: int = 100,
                   top_paths: int = 1, merge_repeated: bool = True, mask_index: Any = 0) -> Any:
        if strategy != "greedy":
            return keras_own(inputs, sequence_lengths, strategy=strategy, beam_width=beam_width,
                             top_paths=top_paths, merge_repeated=merge_repeated, mask_index=mask_index)
        if mask_index is not None and mask_index < 0 and backend == "tensorflow":
            mask_index += inputs.shape[-1]
        return decode(inputs, sequence_lengths, merge_repeated, mask_index)
    return ctc_decode


def decode(inputs: Any, sequence_lengths: Any, merge_repeated: bool, mask_index: Any) -> tuple[Any, Any]:
    """(labels (1, batch, frames) int32, -1 padded; scores (batch, 1)) in the current Keras backend's tensors."""
    from keras import ops
    from keras.src import backend

    x = ops.convert_to_tensor(inputs)
    x = ops.cast(x, backend.result_type(x.dtype, "float32"))
    blank = x.shape[-1] - 1 if mask_index is None else mask_index
    labels = ops.cast(ops.argmax(x, axis=-1), "int32")  # (batch, frames)
    frame = ops.cumsum(ops.ones_like(labels), axis=1) - 1  # 0, 1, ... without a size read as a number
    within = frame < ops.expand_dims(ops.cast(ops.convert_to_tensor(sequence_lengths), "int32"), 1)
    emit = ops.logical_and(within, ops.not_equal(labels, blank))
    if merge_repeated:
        # the frame before's label (none before the first), by a roll: a slice one shorter made torch.export
        # guard on the frame count minus one
        before = ops.where(ops.equal(frame, 0), -1, ops.roll(labels, 1, axis=1))
        emit = ops.logical_and(emit, ops.not_equal(labels, before))
    slot = ops.cumsum(ops.cast(emit, "int32"), axis=1) - 1
    placed = ops.logical_and(ops.equal(ops.expand_dims(slot, 2), ops.expand_dims(frame, 1)),
                             ops.expand_dims(emit, 2))  # (batch, frame, slot)
    # one frame at most per slot: its label by a max over the frames (a sum then minus one came out of
    # OpenVINO's CPU plugin wrong for every row but the first, an int32 ReduceSum and Sub it fused)
    decoded = ops.max(ops.where(placed, ops.expand_dims(labels, 2), -1), axis=1)
    scores = -ops.sum(ops.where(within, ops.max(x, axis=-1), ops.zeros_like(x[..., 0])), axis=1, keepdims=True)
    return ops.expand_dims(decoded, 0), scores
