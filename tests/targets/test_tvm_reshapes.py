"""Reshape targets computed from the open dimensions (tf2onnx's Einsum of attention heads: Shape -> Gather ->
ReduceProd -> Concat -> Reshape; a GroupNormalization's groups; a Dense on a sequence) made constant with -1 and
copied axes, so TVM's importer keeps the batch and a length dynamic (modelkit/targets/tvm/reshapes.py); what one
constant target cannot say is left alone, and the importer's failure then compiles at batch 1, saying so.
Attention models end to end: tests/convert/test_multi_format.py."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tvm")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from modelkit.targets.tvm import reshapes  # noqa: E402
from modelkit.targets.tvm.symbolic import whole_axis_slices  # noqa: E402


def _heads_graph(path: Path | None = None) -> onnx.ModelProto:
    """x (batch, 3, 2, 4) -> Transpose (batch, 2, 3, 4) -> Reshape to [prod(Shape[0:2]), -1, Shape[3]] (batch*2,
    3, 4) -> a MatMul: the target as tf2onnx's Einsum of attention heads computes it; and a mask-like Slice
    [0:1000000000] of the batch."""
    w = np.arange(8, dtype=np.float32).reshape(4, 2) / 8
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 1, 3]),
             helper.make_node("Shape", ["t"], ["s"]),
             helper.make_node("Gather", ["s", "batch_axes"], ["g"]),
             helper.make_node("ReduceProd", ["g"], ["p"], keepdims=1),
             helper.make_node("Gather", ["s", "last"], ["d"]),
             helper.make_node("Concat", ["p", "minus1", "d"], ["target"], axis=0),
             helper.make_node("Reshape", ["t", "target"], ["r"]),
             helper.make_node("MatMul", ["r", "w"], ["y"]),
             helper.make_node("Slice", ["x", "zero", "big", "zero"], ["whole"]),
             helper.make_node("ReduceSum", ["whole"], ["total"], keepdims=0)]
    inits = [numpy_helper.from_array(np.array([0, 1], np.int64), "batch_axes"),
             numpy_helper.from_array(np.array([3], np.int64), "last"),
             numpy_helper.from_array(np.array([-1], np.int64), "minus1"), numpy_helper.from_array(w, "w"),
             numpy_helper.from_array(np.array([0], np.int64), "zero"),
             numpy_helper.from_array(np.array([1000000000], np.int64), "big")]
    graph = helper.make_graph(nodes, "heads",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 2, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
                               helper.make_tensor_value_info("total", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    if path is not None:
        onnx.save(model, str(path))
    return model


def _run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})


def test_a_batch_computed_reshape_target_is_made_constant_and_its_arithmetic_removed():
    model = _heads_graph()
    rewritten, count = reshapes.constant_reshapes(model)
    assert count == 1
    ops = [n.op_type for n in rewritten.graph.node]
    assert "ReduceProd" not in ops and "Shape" not in ops and ops.count("Reshape") == 1
    target = next(numpy_helper.to_array(i) for i in rewritten.graph.initializer if i.name.endswith("__target"))
    assert target.tolist() == [-1, 3, 4]  # batch * 2 heads
    x = np.random.default_rng(0).random((5, 3, 2, 4)).astype(np.float32)
    for got, want in zip(_run(rewritten, x), _run(model, x)):
        np.testing.assert_array_equal(got, want)
    sliced, changed = whole_axis_slices(rewritten)
    assert changed == 1 and "Slice" not in [n.op_type for n in sliced.graph.node]  # [0:1e9]: the whole batch


def test_what_one_constant_target_cannot_say_keeps_its_computed_target():
    assert reshapes._target([(2, 16, 8), (4, 16, 8), (6, 16, 8)]).tolist() == [-1, 16, 8]
    assert reshapes._target([(3, 5), (3, 5), (3, 5)]).tolist() == [3, 5]  # no axis changes: the sizes
    assert reshapes._target([(1, 6), (2, 12), (3, 18)]) is None  # two axes change, neither copied
    # an axis equal to the input's at its position is copied (0): a GroupNormalization's [batch, length, groups, c]
    seen_in = [(1, 32, 16), (2, 32, 16), (1, 64, 16), (3, 96, 16)]
    assert reshapes._target([(*i[:2], 4, 4) for i in seen_in], seen_in).tolist() == [0, 0, 4, 4]
    assert reshapes._target([(i[0] * i[1], 16) for i in seen_in], seen_in).tolist() == [-1, 16]
    assert reshapes._target([(i[1], i[0], 16) for i in seen_in], seen_in) is None  # moved axes: not copies
    assert reshapes._target([(0, 6), (0, 6), (0, 6)]) is None and reshapes._target(None) is None
    model = _heads_graph()
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "length"  # (2 * batch, length, 4): two axes
    assert reshapes.constant_reshapes(model)[1] == 0  # change, neither at the input's position


def _sequence_graph(path: Path) -> onnx.ModelProto:
    """x (batch, length, 8), as tf2onnx writes a GroupNormalization and a Dense on a sequence: a Reshape to
    [batch, length, 2, 4] and back, each target computed from Shape(x); then Reshape(-1, 8) -> MatMul(8x6) -> a
    Reshape to [batch, length, 6] and another MatMul(6x6) whose columns are split in heads [batch, length, 2, 3]."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Slice", ["s", "zero", "two"], ["lead"]),
             helper.make_node("Concat", ["lead", "groups"], ["split"], axis=0),
             helper.make_node("Reshape", ["x", "split"], ["g"]),
             helper.make_node("Relu", ["g"], ["gr"]),
             helper.make_node("Concat", ["lead", "eight"], ["joined"], axis=0),
             helper.make_node("Reshape", ["gr", "joined"], ["h"]),
             helper.make_node("Reshape", ["h", "flat8"], ["f"]),
             helper.make_node("MatMul", ["f", "w"], ["m"]),
             helper.make_node("Concat", ["lead", "six"], ["dense_shape"], axis=0),
             helper.make_node("Reshape", ["m", "dense_shape"], ["d"]),
             helper.make_node("Reshape", ["d", "flat6"], ["f2"]),
             helper.make_node("MatMul", ["f2", "w2"], ["m2"]),
             helper.make_node("Concat", ["lead", "heads"], ["heads_shape"], axis=0),
             helper.make_node("Reshape", ["m2", "heads_shape"], ["y"])]
    inits = [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in
             [("zero", [0]), ("two", [2]), ("groups", [2, 4]), ("eight", [8]), ("six", [6]), ("flat8", [-1, 8]),
              ("flat6", [-1, 6]), ("heads", [2, 3])]]
    inits += [numpy_helper.from_array(rng.normal(size=(8, 6)).astype(np.float32), "w"),
              numpy_helper.from_array(rng.normal(size=(6, 6)).astype(np.float32), "w2")]
    graph = helper.make_graph(nodes, "sequence",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "length", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "length", 2, 3])],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, str(path))
    return model


def test_reshapes_computed_from_an_open_length_compile_with_tvm(tmp_path):
    """nc102: a GroupNormalization and a Dense on a sequence of open length (a per-token tagger) were refused by TVM
    ("Reshape requires the input new shape to be Shape"): the targets, computed from Shape(x), are made constant
    with copied axes (0) and the Dense's Reshape -> MatMul -> Reshape the one MatMul it is; the library keeps the
    batch and the length open and matches onnxruntime at other sizes."""
    import modelkit
    from modelkit.formats import manifest_path
    from modelkit.targets.tvm.edge import onnx_to_tvm

    model = _sequence_graph(tmp_path / "seq.onnx")
    rewritten, count = reshapes.constant_reshapes(model)
    assert count == 4  # two GroupNormalization-like targets, two MatMuls
    ops = [n.op_type for n in rewritten.graph.node]
    assert "Shape" not in ops and ops.count("MatMul") == 2 and ops.count("Reshape") == 3, ops
    x = np.random.default_rng(1).normal(size=(3, 11, 8)).astype(np.float32)
    np.testing.assert_allclose(_run(rewritten, x)[0], _run(model, x)[0], rtol=1e-6, atol=1e-6)

    onnx_to_tvm(tmp_path / "seq.onnx", tmp_path / "seq.tvm.so")
    manifest = json.loads(manifest_path(tmp_path / "seq.tvm.so").read_text())
    assert manifest["extra"]["dynamic_batch"] is True
    lib = modelkit.load(tmp_path / "seq.tvm.so")
    for shape in [(1, 5, 8), (4, 23, 8)]:
        x = np.random.default_rng(2).normal(size=shape).astype(np.float32)
        np.testing.assert_allclose(lib.predict({"x": x})["y"], _run(model, x)[0], rtol=1e-5, atol=1e-5)


def test_without_the_rewrite_the_importer_fails_and_the_library_is_compiled_at_batch_1(tmp_path, monkeypatch):
    """The batch-1 fallback stays for what the rewrite does not cover (here: the rewrite turned off)."""
    from modelkit.formats import manifest_path
    from modelkit.targets.tvm.edge import onnx_to_tvm

    src = tmp_path / "heads.onnx"
    _heads_graph(src)
    onnx_to_tvm(src, tmp_path / "heads.tvm.so")
    assert json.loads(manifest_path(tmp_path / "heads.tvm.so").read_text())["extra"]["dynamic_batch"] is True
    monkeypatch.setattr(reshapes, "constant_reshapes", lambda proto: (proto, 0))
    onnx_to_tvm(src, tmp_path / "fixed.tvm.so")
    extra = json.loads(manifest_path(tmp_path / "fixed.tvm.so").read_text())["extra"]
    assert extra["batch"] == 1 and "cannot keep the batch dynamic" in extra["batch_note"]


@pytest.mark.slow  # the mechanism's fast test is the graph above
def test_a_tagger_of_any_length_with_group_norm_and_dense_compiles_with_tvm(tmp_path):
    """nc102's per-token tagger (Embedding -> Conv1D -> GroupNormalization -> Dense per step), tokens of any length:
    refused by TVM before; now a library with the batch and the length open, matching Keras at other lengths."""
    import modelkit
    from modelkit._backend import import_keras

    keras = import_keras()
    keras.utils.set_random_seed(3)
    inp = keras.Input((None,), dtype="int32", name="tokens")
    h = keras.layers.Embedding(50, 16)(inp)
    h = keras.layers.Conv1D(32, 3, padding="same", activation="relu")(h)
    h = keras.layers.GroupNormalization(groups=8)(h)
    h = keras.layers.Dense(32, activation="gelu")(h)
    keras.Model(inp, keras.layers.Dense(5, activation="softmax", name="tags")(h)).save(tmp_path / "tagger.keras")

    r = modelkit.convert(tmp_path / "tagger.keras", to="tvm", out_dir=tmp_path / "out")[-1]  # after its ONNX
    source, lib = modelkit.load(tmp_path / "tagger.keras"), modelkit.load(r.path)
    assert r.parity["ok"] and tuple(lib.signature.inputs[0].shape) == (None, None), lib.signature
    assert "1" in r.parity["dynamic_dims"]["tokens"] or 1 in r.parity["dynamic_dims"]["tokens"]  # verified open
    for shape in [(1, 7), (3, 31)]:
        tokens = np.random.default_rng(shape[1]).integers(1, 50, size=shape).astype(np.int32)
        want = source.predict({"tokens": tokens})["tags"]
        got = lib.predict({"tokens": tokens})["tags"]
        assert got.shape == (*shape, 5)
        np.testing.assert_allclose(got, want, atol=1e-5)
