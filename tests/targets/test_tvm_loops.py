"""ONNX Loop nodes of a constant trip count unrolled for TVM (modelkit/targets/tvm/loops.py): on a
hand-built Loop, in onnxruntime against the original graph; end to end, masked recurrent Keras models of a
fixed length (tf2onnx writes their loop as a Loop) compile with TVM and match Keras on padded inputs."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import modelkit
from modelkit import _child
from modelkit.errors import UnsupportedConversionError
from modelkit.formats import manifest_path

pytest.importorskip("tvm")


def _loop_model(steps_const: bool) -> object:
    """h_t = tanh(x[:, t] @ W + h @ U) over the 6 steps of x (batch, 6, 4): a Loop with the iteration number,
    a condition, two carried values (h, and U passed through) and a scan output (every h)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w, u = rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=(3, 3)).astype(np.float32) * 0.5
    body = helper.make_graph(
        [helper.make_node("Gather", ["x", "i"], ["xt"], axis=1),
         helper.make_node("MatMul", ["xt", "W"], ["a"]),
         helper.make_node("MatMul", ["h_in", "u_in"], ["b"]),
         helper.make_node("Add", ["a", "b"], ["s"]),
         helper.make_node("Tanh", ["s"], ["h_out"]),
         helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Identity", ["u_in"], ["u_out"]),
         helper.make_node("Identity", ["h_out"], ["h_scan"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h_in", TensorProto.FLOAT, ["batch", 3]),
         helper.make_tensor_value_info("u_in", TensorProto.FLOAT, [3, 3])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h_out", TensorProto.FLOAT, ["batch", 3]),
         helper.make_tensor_value_info("u_out", TensorProto.FLOAT, [3, 3]),
         helper.make_tensor_value_info("h_scan", TensorProto.FLOAT, ["batch", 3])])
    nodes = [helper.make_node("Shape", ["x"], ["shape"]),
             helper.make_node("Gather", ["shape", "one"], ["n"], axis=0),
             helper.make_node("Loop", ["M" if steps_const else "n", "true", "h0", "U"], ["h_last", "u_last", "hs"],
                              body=body, name="rnn"),
             helper.make_node("Transpose", ["hs"], ["y"], perm=[1, 0, 2]),
             helper.make_node("Add", ["h_last", "u_last"], ["z"])]  # the passed-through U reaches an output
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(u, "U"),
             numpy_helper.from_array(np.array(6, np.int64), "M"), numpy_helper.from_array(np.array(True), "true"),
             numpy_helper.from_array(np.array(1, np.int64), "one")]
    graph = helper.make_graph(nodes, "loop", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 6, 4]),
                                              helper.make_tensor_value_info("h0", TensorProto.FLOAT, ["batch", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 6, 3]),
                               helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model


def _run(model: object, feed: dict) -> list:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feed)


def test_a_constant_trip_count_loop_unrolls_to_the_same_numbers():
    import onnx

    from modelkit.targets.tvm.loops import unroll_loops

    model = _loop_model(steps_const=True)
    feed = {"x": np.random.default_rng(1).normal(size=(3, 6, 4)).astype(np.float32),
            "h0": np.random.default_rng(2).normal(size=(3, 3)).astype(np.float32)}
    want = _run(model, feed)
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    unrolled, steps = unroll_loops(copy)
    assert steps == [6] and not any(n.op_type == "Loop" for n in unrolled.graph.node)
    onnx.checker.check_model(unrolled)
    for got, expected in zip(_run(unrolled, feed), want):
        np.testing.assert_allclose(got, expected, atol=1e-6)


def test_an_open_trip_count_loop_is_left_alone():
    from modelkit.targets.tvm.loops import unroll_loops

    model = _loop_model(steps_const=False)
    unrolled, steps = unroll_loops(model)
    assert steps == [] and [n.op_type for n in unrolled.graph.node].count("Loop") == 1


@pytest.mark.parametrize("time_axis", [0, 1])
def test_reverse_sequence_rewritten_as_a_gather_gives_the_same_numbers(time_axis):
    """ReverseSequence (a masked backward RNN in tf2onnx's graph) as GatherElements, against onnxruntime's own
    ReverseSequence: rows of length 0, 1, inside and full."""
    import onnx
    from onnx import TensorProto, helper

    from modelkit.targets.tvm.loops import reverse_sequences

    shape = ["T", "B", 3] if time_axis == 0 else ["B", "T", 3]
    graph = helper.make_graph(
        [helper.make_node("ReverseSequence", ["x", "lens"], ["y"], batch_axis=1 - time_axis, time_axis=time_axis)],
        "rev", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape),
                helper.make_tensor_value_info("lens", TensorProto.INT64, ["B"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    x = np.random.default_rng(3).normal(size=(5, 4, 3)).astype(np.float32)
    feed = {"x": x if time_axis == 0 else x.transpose(1, 0, 2).copy(), "lens": np.array([0, 1, 3, 5], np.int64)}
    (want,) = _run(model, feed)
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    rewritten, count = reverse_sequences(copy)
    assert count == 1 and "ReverseSequence" not in [n.op_type for n in rewritten.graph.node]
    onnx.checker.check_model(rewritten)
    (got,) = _run(rewritten, feed)
    np.testing.assert_array_equal(got, want)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["masking_gru", "masked_bilstm"])
def test_masked_recurrent_models_of_a_fixed_length_compile_with_tvm(tmp_path, kind, capfd):
    from tests.targets.loop_models import padded

    src = Path(_child.run("tests.targets.loop_models:save", {"kind": kind, "path": str(tmp_path / f"{kind}.keras")},
                          backend="tensorflow", quiet=True))
    capfd.readouterr()
    results = {r.format: r for r in modelkit.convert(src, "tvm", out_dir=tmp_path)}
    assert "Warning" not in capfd.readouterr().err  # TVM's C++ notices while building stay out of the terminal
    r = results["tvm"]
    assert r.parity["ok"] and r.max_abs < 1e-4
    keras_model, lib = modelkit.load(src), modelkit.load(r.path)
    fixed = lib.signature.inputs[0].shape[0]  # TVM compiles at batch 1 when its importer cannot keep it open
    note = json.loads(manifest_path(Path(r.path)).read_text())["extra"]["batch_note"]
    assert fixed is None or (fixed == 1 and "fixed batch of 1" in note)
    feed = padded(kind, 4, seed=4)
    for out, want in keras_model.predict(feed).items():
        rows = [lib.predict({k: v[i:i + 1] for k, v in feed.items()})[out] for i in range(4)] if fixed \
            else [lib.predict(feed)[out]]
        np.testing.assert_allclose(np.concatenate(rows), want, atol=1e-4, err_msg=kind)


@pytest.mark.slow
def test_an_open_length_loop_is_refused_with_the_input_spec_that_unrolls_it(tmp_path):
    src = Path(_child.run("tests.convert.route_models:save", {"kind": "gru_open", "path": str(tmp_path / "g.keras")},
                          backend="tensorflow", quiet=True))
    with pytest.raises(UnsupportedConversionError, match=r"Loop.*a Loop of a fixed number of steps is unrolled, and "
                                                         r"dimension 'frames' dim 1 is open.*--input-spec"):
        modelkit.convert(src, "tvm", out_dir=tmp_path)


def test_a_tvm_error_names_the_operator_it_prints_whole():
    """A bidirectional GRU's batch note (nc120) carried TVM's ~300-character repr of relax.concat: its name now."""
    from tvm import relax
    from tvm.script import relax as R

    from modelkit.targets.tvm.compile import _error_text

    x = relax.Var("x", R.Tensor((1,), "int64"))
    builder = relax.BlockBuilder()
    with builder.function("f", [x]):
        with pytest.raises(TypeError) as caught:
            builder.normalize(relax.op.concat(relax.Tuple([x, relax.ShapeExpr([3])])))
        builder.emit_func_output(x)
    assert "ir.Op(span=" in str(caught.value)  # TVM's own text
    assert _error_text(caught.value) == (
        'TypeError: relax.concat expects the input to be a Tuple of Tensors. However, the given input is '
        'T.Tuple(R.Tensor((T.int64(1),), dtype="int64"), R.Shape([T.int64(3)]))')
