"""One step picked from an open axis (`x[:, -1]`, a sequence model's last step; tf2onnx writes it as a Slice of
[-1:] and a Squeeze) compiled by TVM with the length open (modelkit/targets/tvm/mends.py, mend_picked_slices).
Before, TVM's importer refused the Squeeze ("Squeeze axis 1 has a symbolic extent that cannot be proven to be 1")
and such a model compiled only at a fixed length (nc128, a TCN forecaster)."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tvm")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from modelkit.targets.tvm.mends import mend_picked_slices  # noqa: E402

INT_MAX = 2**31 - 1


def _picker(starts, ends, axes, squeeze: int = 1) -> onnx.ModelProto:
    """x (batch, length, 4) -> Slice(starts, ends, axes) -> Squeeze(squeeze) -> MatMul by a (4, 3) weight."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(np.array(v, np.int64), n)
             for n, v in [("starts", starts), ("ends", ends), ("axes", axes), ("sq", [squeeze])]]
    inits.append(numpy_helper.from_array(rng.normal(size=(4, 3)).astype(np.float32), "w"))
    nodes = [helper.make_node("Slice", ["x", "starts", "ends", "axes"], ["s"]),
             helper.make_node("Squeeze", ["s", "sq"], ["step"]), helper.make_node("MatMul", ["step", "w"], ["y"])]
    graph = helper.make_graph(nodes, "pick", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "n", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.mark.parametrize("starts, ends, axes, index", [
    ([0, -1], [INT_MAX, INT_MAX], [0, 1], -1),  # tf2onnx's x[:, -1, :]
    ([2], [3], [1], 2),
    ([-3], [-2], [1], -3),
])
def test_a_picked_step_becomes_a_gather_of_the_same_numbers(starts, ends, axes, index):
    model = _picker(starts, ends, axes)
    mended, count = mend_picked_slices(_picker(starts, ends, axes))
    assert count == 1
    assert [n.op_type for n in mended.graph.node] == ["Gather", "MatMul"]  # the Slice read by nobody else: gone
    gather = mended.graph.node[0]
    consts = {i.name: numpy_helper.to_array(i) for i in mended.graph.initializer}
    assert consts[gather.input[1]].shape == () and int(consts[gather.input[1]]) == index
    for length in (3, 8):
        x = np.random.default_rng(length).normal(size=(2, length, 4)).astype(np.float32)
        np.testing.assert_array_equal(_run(mended, x), _run(model, x))


@pytest.mark.parametrize("starts, ends, axes, squeeze", [
    ([1], [3], [1], 1),  # two steps: nothing to squeeze as a pick
    ([-1], [0], [1], 1),  # an empty slice, not the last step
    ([0, -1], [1, INT_MAX], [0, 1], 1),  # the batch cropped too
    ([-1], [INT_MAX], [1], 0),  # a Squeeze of another axis
])
def test_other_slices_are_left(starts, ends, axes, squeeze):
    mended, count = mend_picked_slices(_picker(starts, ends, axes, squeeze))
    assert count == 0 and [n.op_type for n in mended.graph.node] == ["Slice", "Squeeze", "MatMul"]


def test_a_slice_read_elsewhere_too_is_kept():
    model = _picker([-1], [INT_MAX], [1])
    model.graph.node.append(helper.make_node("Identity", ["s"], ["also"]))
    model.graph.output.append(helper.make_tensor_value_info("also", TensorProto.FLOAT, None))
    mended, count = mend_picked_slices(model)
    assert count == 1 and [n.op_type for n in mended.graph.node] == ["Slice", "Gather", "MatMul", "Identity"]


@pytest.mark.slow
def test_a_keras_last_step_compiles_with_the_length_open(tmp_path):
    """A causal Conv1D over an open length, its last step read by `h[:, -1, :]`, through `convert --to tvm`: the
    compiled library takes lengths it was not verified at and matches Keras."""
    import modelkit
    from modelkit._backend import import_keras

    keras = import_keras()
    keras.utils.set_random_seed(3)
    inp = keras.Input((None, 2), name="series")
    h = keras.layers.Conv1D(8, 3, padding="causal", activation="relu")(inp)
    model = keras.Model(inp, keras.layers.Dense(1, name="next")(h[:, -1, :]))
    model.save(tmp_path / "last.keras")
    modelkit.convert(tmp_path / "last.keras", to="tvm", out_dir=tmp_path)
    lib = modelkit.load(tmp_path / "last.tvm.so")
    assert tuple(lib.signature.inputs[0].shape) == (None, None, 2)
    for length in (5, 37):
        x = np.random.default_rng(length).normal(size=(3, length, 2)).astype(np.float32)
        np.testing.assert_allclose(lib.predict({"series": x})["next"], model.predict(x, verbose=0), atol=1e-5)
