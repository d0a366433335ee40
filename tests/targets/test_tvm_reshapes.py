"""Reshape targets computed from the batch (tf2onnx's Einsum of attention heads: Shape -> Gather -> ReduceProd ->
Concat -> Reshape) made constant with -1 on the batch axis, so TVM's importer keeps the batch dynamic
(modelkit/targets/tvm/reshapes.py); what the probe cannot read as one axis of k * batch is left alone, and the
importer's failure then compiles at batch 1, saying so. Attention models end to end:
tests/convert/test_multi_format.py."""
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


def test_what_is_not_one_axis_of_k_times_the_batch_keeps_its_computed_target():
    assert reshapes._target([(2, 16, 8), (4, 16, 8), (6, 16, 8)]).tolist() == [-1, 16, 8]
    assert reshapes._target([(3, 5), (3, 5), (3, 5)]).tolist() == [3, 5]  # no axis changes: the sizes
    assert reshapes._target([(1, 6), (2, 12), (3, 18)]) is None  # two axes change
    assert reshapes._target([(2, 6), (3, 6), (4, 6)]) is None  # batch + 1: not k * batch
    assert reshapes._target([(0, 6), (0, 6), (0, 6)]) is None and reshapes._target(None) is None
    model = _heads_graph()
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "length"  # another open axis: no probe
    assert reshapes.constant_reshapes(model)[1] == 0


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
