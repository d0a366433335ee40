"""nc163: an OCR model shipped with its greedy CTC decode (`keras.ops.ctc_decode`) in a user's layer, each row's
length from the line's width (`ops.full((batch,), ops.shape(probs)[1])`).

Found converting such a model (rows of load_digits glyphs read by a CRNN) with `--to all`: TFLite refused it
(CTCGreedyDecoder is no builtin), and torch.export fixed the line width twice, in Keras' torch decode (the frame
count read as a Python int) and in the user's `ops.full` of the width (Keras' convert_to_tensor calls torch.as_tensor
on the SymInt). Now greedy decoding is elementwise ops and cumulative sums for both (modelkit.converters._ctc_greedy)
and a size used as a value stays symbolic (modelkit.converters._torch_sym_scalars). OpenVINO then decoded every row
but the first wrongly (its CPU plugin fused the int32 sum and the minus one that placed the labels); they are placed
by a max.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import modelkit
from modelkit import _child
from tests.helpers.user_code import keras_beside

OCR = '''import keras
from keras import ops


@keras.saving.register_keras_serializable(package="ocr")
class GreedyCTC(keras.layers.Layer):
    def call(self, probs):
        lengths = ops.full((ops.shape(probs)[0],), ops.shape(probs)[1], dtype="int32")
        decoded, _ = ops.ctc_decode(probs, lengths, strategy="greedy", mask_index=4)
        return decoded[0]
'''


def save(folder: str) -> str:
    """frames (any count, 3 features) -> Dense(5) softmax (4 labels and the blank) -> GreedyCTC."""
    ocr, keras = keras_beside(Path(folder), "ocr", OCR)
    x = keras.Input((None, 3), name="frames")
    probs = keras.layers.Dense(5, activation="softmax")(x)
    keras.Model(x, ocr.GreedyCTC(name="labels")(probs)).save(Path(folder) / "ocr.keras")
    return str(Path(folder) / "ocr.keras")


def decode_both_ways(seed: int) -> dict:
    """Keras' own greedy decode and modelkit's, in this child's backend, on rows with repeats, blanks and lengths
    shorter than the frames; {'same': all equal, 'cases': how many}."""
    import keras

    from modelkit.converters._ctc_greedy import greedy_ctc_decode

    backend = keras.backend.backend()
    own = keras.src.backend.nn.ctc_decode
    mine = greedy_ctc_decode(own, backend)
    rng = np.random.default_rng(seed)
    same, cases = True, 0
    for case in range(40):
        batch, frames, classes = (int(v) for v in rng.integers((1, 1, 2), (5, 12, 6)))
        x = rng.random((batch, frames, classes)).astype(np.float32)  # few classes: repeats and blanks are common
        lengths = rng.integers(0, frames + 1, batch).astype(np.int32)
        kwargs = {"merge_repeated": bool(case % 3), "mask_index": [0, classes - 1, -1, None][case % 4]}
        for a, b in zip(own(x, lengths, **kwargs), mine(x, lengths, **kwargs)):
            a, b = keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b)
            same &= a.shape == b.shape and bool(np.allclose(a, b, atol=1e-5))
        cases += 1
    return {"same": same, "cases": cases}


@pytest.mark.slow
def test_greedy_decoding_is_keras_own_under_tensorflow_and_torch():
    for backend in ("tensorflow", "torch"):  # a negative mask_index is read differently by the two: kept so
        got = _child.run("tests.convert.test_ctc_decode:decode_both_ways", {"seed": 3}, backend=backend, quiet=True)
        assert got == {"same": True, "cases": 40}, backend


@pytest.mark.slow
def test_a_decode_layer_converts_to_tflite_pt2_executorch_and_openvino_at_any_width(tmp_path):
    src = _child.run("tests.convert.test_ctc_decode:save", {"folder": str(tmp_path)}, backend="tensorflow",
                     quiet=True)
    results = modelkit.convert(src, to="tflite,pt2,executorch,openvino", out_dir=tmp_path / "out",
                               imports=[str(tmp_path / "ocr.py")])
    assert sorted(r.format for r in results) == ["executorch", "onnx", "openvino", "pt2", "tflite"]
    for r in results:
        assert r.parity["ok"] and r.max_abs == 0, (r.format, r.parity["outputs"])
        assert r.parity["dynamic_dims"]["frames"]["1"]["dynamic"], r.format  # the width stays open
    feed = np.random.default_rng(1).random((3, 23, 3)).astype(np.float32)  # a width no check used
    want = modelkit.load(src, imports=[str(tmp_path / "ocr.py")]).predict(feed)["labels"]
    assert want.shape == (3, 23) and (want >= 0).sum(axis=1).max() > 2  # labels, -1 padded
    for r in results:
        np.testing.assert_array_equal(modelkit.load(r.path).predict(feed)["labels"], want)
