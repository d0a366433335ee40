"""Slice bounds and pads computed from an open size (tf2onnx's Conv1DTranspose / Conv2DTranspose with
padding="same": a VALID ConvTranspose cropped by a Slice whose starts and ends it computes with Sub / Div on shape
values, then a Pad of computed zeros) made constant, so TVM's importer keeps the size open
(modelkit/targets/tvm/slices.py). Before, such a model was refused at an open size ("Node Sub cannot handle
ShapeExpr inputs")."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tvm")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from modelkit.targets.tvm import slices  # noqa: E402


def _upsampler(path) -> onnx.ModelProto:
    """x (batch, 2, length) -> ConvTranspose(stride 2, kernel 4, VALID): 2 * length + 2 -> a Slice of the middle
    2 * length, its bounds computed from both shapes as tf2onnx does, -> a Pad by max(want - full, 0) (zeros)."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("ConvTranspose", ["x", "w"], ["ct"], strides=[2], kernel_shape=[4]),
             helper.make_node("Shape", ["ct"], ["cs"]), helper.make_node("Slice", ["cs", "two", "three"], ["full"]),
             helper.make_node("Shape", ["x"], ["xs"]), helper.make_node("Slice", ["xs", "two", "three"], ["len"]),
             helper.make_node("Mul", ["len", "two"], ["want"]), helper.make_node("Sub", ["full", "want"], ["extra"]),
             helper.make_node("Div", ["extra", "two"], ["start"]), helper.make_node("Add", ["start", "want"], ["end"]),
             helper.make_node("Slice", ["ct", "start", "end", "two"], ["crop"]),
             helper.make_node("Sub", ["want", "full"], ["short"]), helper.make_node("Max", ["short", "zero"], ["more"]),
             helper.make_node("Concat", ["zeros5", "more"], ["pads"], axis=0),
             helper.make_node("Pad", ["crop", "pads"], ["y"])]
    inits = [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in
             [("two", [2]), ("three", [3]), ("zero", [0]), ("zeros5", [0, 0, 0, 0, 0])]]
    inits.append(numpy_helper.from_array(rng.normal(size=(2, 3, 4)).astype(np.float32), "w"))
    graph = helper.make_graph(nodes, "up", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 2, "n"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 3, "m"])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, str(path))
    return model


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_computed_crop_bounds_and_pads_become_constants_and_compile_with_the_length_open(tmp_path):
    import modelkit
    from modelkit.targets.tvm.edge import onnx_to_tvm

    model = _upsampler(tmp_path / "up.onnx")
    rewritten, count = slices.constant_slices(model)
    assert count == 2  # the Slice's bounds, the Pad's pads
    ops = [n.op_type for n in rewritten.graph.node]
    assert "Shape" not in ops and "Sub" not in ops and "Div" not in ops, ops
    consts = {i.name: numpy_helper.to_array(i).tolist() for i in rewritten.graph.initializer}
    crop = next(n for n in rewritten.graph.node if n.op_type == "Slice")
    assert consts[crop.input[1]] == [1] and consts[crop.input[2]] == [-1]  # (k - s) // 2 from each end
    for length in (1, 6, 17):
        x = np.random.default_rng(length).normal(size=(2, 2, length)).astype(np.float32)
        np.testing.assert_array_equal(_run(rewritten, x), _run(model, x))

    onnx_to_tvm(tmp_path / "up.onnx", tmp_path / "up.tvm.so")
    lib = modelkit.load(tmp_path / "up.tvm.so")
    assert tuple(lib.signature.inputs[0].shape) == (None, 2, None)
    for shape in [(1, 2, 5), (3, 2, 19)]:
        x = np.random.default_rng(shape[2]).normal(size=shape).astype(np.float32)
        got = lib.predict({"x": x})["y"]
        assert got.shape == (shape[0], 3, 2 * shape[2])
        np.testing.assert_allclose(got, _run(model, x), rtol=1e-5, atol=1e-5)


def test_bounds_computed_from_the_datas_values_are_left():
    """The probes feed zeros: a bound computed from the data (here its largest value as an index) would look like a
    constant there; only bounds computed from shapes and constants are rewritten."""
    nodes = [helper.make_node("ReduceMax", ["x"], ["top"], keepdims=0),
             helper.make_node("Cast", ["top"], ["index"], to=TensorProto.INT64),
             helper.make_node("Reshape", ["index", "one"], ["end"]),
             helper.make_node("Slice", ["x", "zero", "end", "one"], ["y"])]
    inits = [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in [("zero", [0]), ("one", [1])]]
    graph = helper.make_graph(nodes, "by_value", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", None])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    assert slices.constant_slices(model)[1] == 0


def test_bounds_that_no_constant_says_are_left():
    assert slices._fixed([1, 1, 1], [10, 20, 30], end=False) == 1
    assert slices._fixed([9, 19, 29], [10, 20, 30], end=True) == -1
    assert slices._fixed([10, 20, 30], [10, 20, 30], end=True) == slices.TO_THE_END
    assert slices._fixed([5, 10, 15], [10, 20, 30], end=True) is None  # half of the axis: no constant
    assert slices._fixed([10, 20, 30], [10, 20, 30], end=False) is None  # an empty slice at the end: left


@pytest.mark.slow
def test_an_upscaler_of_any_image_size_with_conv2d_transpose_compiles_with_tvm(tmp_path):
    """A super-resolution decoder (Conv2D -> Conv2DTranspose(stride 2, same) -> Conv2D) on images of any size: refused
    by TVM before; now one library for every size, matching Keras at sizes it was not verified on."""
    import modelkit
    from modelkit._backend import import_keras

    keras = import_keras()
    keras.utils.set_random_seed(7)
    inp = keras.Input((None, None, 3), name="image")
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    h = keras.layers.Conv2DTranspose(8, 3, strides=2, padding="same", activation="relu")(h)
    keras.Model(inp, keras.layers.Conv2D(3, 1, name="upscaled")(h)).save(tmp_path / "up.keras")
    r = modelkit.convert(tmp_path / "up.keras", to="tvm", out_dir=tmp_path / "out")[-1]  # after its ONNX
    source, lib = modelkit.load(tmp_path / "up.keras"), modelkit.load(r.path)
    assert r.parity["ok"] and tuple(lib.signature.inputs[0].shape) == (None, None, None, 3), lib.signature
    for shape in [(1, 7, 10, 3), (2, 13, 18, 3)]:
        x = np.random.default_rng(shape[1]).normal(size=shape).astype(np.float32)
        got = lib.predict({"image": x})["upscaled"]
        assert got.shape == (shape[0], 2 * shape[1], 2 * shape[2], 3)
        np.testing.assert_allclose(got, source.predict({"image": x})["upscaled"], atol=1e-5)
