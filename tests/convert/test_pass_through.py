"""nc143: a serving model that returns its request key as it came (an output that is an input), and one tensor
under two output names.

Found converting it with `--to all`: ONNX, OpenVINO and TVM failed. Both ONNX routes wrote `Identity(key) -> key`,
which defines 'key' twice ("Graph must be in single static assignment (SSA) form"); the output is now the input
itself (keras_onnx.inputs_passed_through). OpenVINO's convert_model then gave that output a Parameter of its own,
an input 'key_1' the model does not have; the edge reads such a graph with the frontend as is (onnx_openvino).
"""
from __future__ import annotations

import numpy as np
import pytest

import modelkit
from modelkit import _child
from modelkit.errors import ConversionError


def save(path: str, clash: bool = False) -> str:
    """Inputs 'key' (one int64 per request) and 'x'; outputs 'key' (the input, or with `clash` the input plus one,
    another value under an input's name), and the class probabilities as 'probs' and again as 'scores'."""
    import keras

    key, x = keras.Input((), dtype="int64", name="key"), keras.Input((4,), name="x")
    probs = keras.layers.Dense(3, activation="softmax")(keras.layers.Dense(8, activation="relu")(x))
    out_key = keras.ops.add(key, 1) if clash else key
    keras.Model({"key": key, "x": x}, {"key": out_key, "probs": probs, "scores": probs}).save(path)
    return path


def _source(folder, clash: bool = False) -> str:
    path = folder / ("clash.keras" if clash else "serving.keras")
    return _child.run("tests.convert.test_pass_through:save", {"path": str(path), "clash": clash},
                      backend="tensorflow", quiet=True)


@pytest.mark.slow
def test_a_key_passed_through_reaches_onnx_openvino_and_tvm(tmp_path):
    src = _source(tmp_path)
    results = modelkit.convert(src, "onnx,openvino,tvm", out_dir=tmp_path / "out")
    assert sorted(r.format for r in results) == ["onnx", "openvino", "tvm"]
    x = np.random.default_rng(0).normal(size=(2, 4)).astype(np.float32)
    feed = {"key": np.array([2**40 + 7, -3], np.int64), "x": x}
    want = modelkit.load(src).predict(feed)
    for r in results:
        artifact = modelkit.load(r.path)
        assert artifact.signature.input_names == ["key", "x"], r.format
        got = artifact.predict(feed)
        assert got["key"].dtype == np.int64 and got["key"].tolist() == [2**40 + 7, -3], r.format
        np.testing.assert_array_equal(got["probs"], got["scores"], err_msg=r.format)
        np.testing.assert_allclose(got["probs"], want["probs"], atol=1e-5, err_msg=r.format)


@pytest.mark.slow
def test_an_output_named_as_an_input_with_another_value_is_refused_naming_both(tmp_path):
    src = _source(tmp_path, clash=True)
    with pytest.raises(ConversionError, match=r"clash\.keras: output 'key' has the name of an input but another value, "
                                              r"and an ONNX graph holds one value per name; rename the output"):
        modelkit.convert(src, "onnx", out_dir=tmp_path / "out")
