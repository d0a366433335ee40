"""Recurrent and attention models through TVM (modelkit/targets/tvm/lower_rnn.py): ONNX LSTM / GRU / RNN
nodes unrolled, against onnxruntime's own ops; the zero state's shape casts kept symbolic; end to end, Keras
recurrent and attention models compile with a dynamic batch and match; what stays unsupported is refused,
typed, naming the op and why."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import modelkit
from modelkit import _child
from modelkit.errors import UnsupportedConversionError

pytest.importorskip("tvm")

IN, H, T = 3, 4, 5  # input features, hidden units, steps


def _rnn_model(kind: str, direction: str = "forward", layout: int = 0, init: bool = False, peep: bool = False,
               lbr: int = 0, steps: int | str = T, acts: list[str] | None = None) -> object:
    """One ONNX LSTM / GRU / RNN node with random weights; every output (Y, Y_h, Y_c) is a graph output."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    dirs, gates = (2 if direction == "bidirectional" else 1), {"LSTM": 4, "GRU": 3, "RNN": 1}[kind]
    w = numpy_helper.from_array(rng.normal(size=(dirs, gates * H, IN)).astype(np.float32) * 0.6, "W")
    r = numpy_helper.from_array(rng.normal(size=(dirs, gates * H, H)).astype(np.float32) * 0.6, "R")
    b = numpy_helper.from_array(rng.normal(size=(dirs, 2 * gates * H)).astype(np.float32) * 0.3, "B")
    inits = [w, r, b]
    x_shape = [steps, "batch", IN] if layout == 0 else ["batch", steps, IN]
    state = [dirs, "batch", H] if layout == 0 else ["batch", dirs, H]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)]
    names = ["x", "W", "R", "B", "", "", "", ""]
    if init:
        names[5] = "h0"
        inputs.append(helper.make_tensor_value_info("h0", TensorProto.FLOAT, state))
        if kind == "LSTM":
            names[6] = "c0"
            inputs.append(helper.make_tensor_value_info("c0", TensorProto.FLOAT, state))
    if peep:
        names[7] = "P"
        inits.append(numpy_helper.from_array(rng.normal(size=(dirs, 3 * H)).astype(np.float32) * 0.5, "P"))
    outs = ["y", "y_h"] + (["y_c"] if kind == "LSTM" else [])
    kw = {"hidden_size": H, "direction": direction}
    if layout:
        kw["layout"] = 1
    if kind == "GRU":
        kw["linear_before_reset"] = lbr
    if acts:
        kw["activations"] = acts * dirs
    while names and not names[-1]:
        names.pop()
    node = helper.make_node(kind, names, outs, name="rnn", **kw)
    y_shape = [steps, dirs, "batch", H] if layout == 0 else ["batch", steps, dirs, H]
    graph = helper.make_graph([node], "rnn", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)]
                              + [helper.make_tensor_value_info(o, TensorProto.FLOAT, state) for o in outs[1:]], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], ir_version=8)


def _feed(model: object, batch: int = 3, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feed = {}
    for vi in model.graph.input:
        dims = [batch if d.dim_param == "batch" else (d.dim_value or T) for d in vi.type.tensor_type.shape.dim]
        feed[vi.name] = rng.normal(size=dims).astype(np.float32)
    return feed


def _run(model: object, feed: dict) -> list:
    import onnxruntime as ort

    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)


CASES = [("LSTM", {}), ("LSTM", {"direction": "reverse", "init": True}),
         ("LSTM", {"direction": "bidirectional", "layout": 1, "init": True}), ("LSTM", {"peep": True, "init": True}),
         ("LSTM", {"peep": True}), ("GRU", {}), ("GRU", {"lbr": 1, "direction": "bidirectional"}),
         ("GRU", {"lbr": 1, "init": True, "layout": 1}), ("GRU", {"init": True, "direction": "reverse"}),
         ("RNN", {"direction": "bidirectional"}), ("RNN", {"init": True, "acts": ["Relu"]})]


@pytest.mark.parametrize("kind,kw", CASES, ids=[f"{k}-{'-'.join(f'{a}={v}' for a, v in kw.items())}"
                                                for k, kw in CASES])
def test_an_unrolled_recurrent_node_gives_onnxruntimes_numbers(kind, kw):
    """Every output of the node against onnxruntime's LSTM / GRU / RNN: directions, layouts, initial states,
    peepholes, GRU's linear_before_reset, another activation."""
    import onnx

    from modelkit.targets.tvm.lower_rnn import lower_rnns

    model = _rnn_model(kind, **kw)
    feed = _feed(model)
    if kw.get("layout"):  # onnxruntime has no batch-first RNNs: the same node, time first, transposed around it
        time_first = _rnn_model(kind, **{**kw, "layout": 0})
        want = _run(time_first, {k: v.transpose(1, 0, 2) for k, v in feed.items()})
        want = [want[0].transpose(2, 0, 1, 3)] + [v.transpose(1, 0, 2) for v in want[1:]]
    else:
        want = _run(model, feed)
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    lowered, done, left = lower_rnns(copy)
    assert done == [kind] and left == []
    assert not {"LSTM", "GRU", "RNN"} & {n.op_type for n in lowered.graph.node}
    onnx.checker.check_model(lowered)
    for got, expected, name in zip(_run(lowered, feed), want, ["Y", "Y_h", "Y_c"]):
        assert got.shape == expected.shape, name
        np.testing.assert_allclose(got, expected, atol=2e-6, err_msg=f"{kind} {kw} {name}")


def test_a_node_that_cannot_be_unrolled_is_left_with_the_reason():
    from modelkit.targets.tvm.lower_rnn import lower_rnns

    for model, why in [(_rnn_model("LSTM", steps="T"), "sequence length is not fixed"),
                       (_rnn_model("GRU", acts=["HardSigmoid", "Tanh"]), "activations ['HardSigmoid', 'Tanh']")]:
        lowered, done, left = lower_rnns(model)
        assert done == [] and len(left) == 1 and why in left[0] and "'rnn'" in left[0]
        assert [n.op_type for n in lowered.graph.node] in (["LSTM"], ["GRU"])


def test_a_length_shape_inference_does_not_reach_is_read_by_onnxruntime_and_unrolled():
    """nc37's int8 forecaster: the decoder LSTM reads a RepeatVector's Tile whose repeats ONNX's shape inference
    cannot read (there, QDQ pairs between; here a Cast), so its length looked open and TVM refused the LSTM.
    onnxruntime's shapes at batches 1 to 3 give the fixed length; the unrolled graph keeps onnxruntime's numbers."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from modelkit.targets.tvm.lower_rnn import lower_rnns

    node = _rnn_model("LSTM").graph
    repeats = numpy_helper.from_array(np.array([T, 1, 1], np.int32), "repeats")
    graph = helper.make_graph(
        [helper.make_node("Unsqueeze", ["h", "zero"], ["h1"]), helper.make_node("Cast", ["repeats"], ["r"], to=7),
         helper.make_node("Tile", ["h1", "r"], ["x"]), *node.node],
        "repeat", [helper.make_tensor_value_info("h", TensorProto.FLOAT, ["batch", IN])], list(node.output),
        [*node.initializer, repeats, numpy_helper.from_array(np.array([0], np.int64), "zero")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], ir_version=8)
    open_length = onnx.ModelProto()  # repeated as many times as the batch: onnxruntime sees it change
    open_length.CopyFrom(model)
    del open_length.graph.node[1]
    open_length.graph.node.insert(1, helper.make_node("Concat", ["b", "ones"], ["r"], axis=0))
    open_length.graph.node.insert(1, helper.make_node("Slice", ["s", "zero", "one"], ["b"]))
    open_length.graph.node.insert(1, helper.make_node("Shape", ["h"], ["s"]))
    open_length.graph.initializer.extend([numpy_helper.from_array(np.array([1], np.int64), "one"),
                                          numpy_helper.from_array(np.array([1, 1], np.int64), "ones")])
    assert _run(open_length, {"h": np.ones((2, IN), np.float32)})[0].shape == (2, 1, 2, H)
    lowered, done, left = lower_rnns(open_length)
    assert done == [] and "sequence length is not fixed" in left[0]
    feed = {"h": np.random.default_rng(0).normal(size=(6, IN)).astype(np.float32)}
    want = _run(model, feed)
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    lowered, done, left = lower_rnns(copy)
    assert done == ["LSTM"] and left == []
    for got, expected in zip(_run(lowered, feed), want):
        np.testing.assert_allclose(got, expected, atol=2e-6)


def _zero_state_model(consumer_needs_int32: bool) -> object:
    """tf2onnx's zero state of a recurrent layer: Shape -> Cast(int32) -> Slice -> Concat -> Cast(int64) -> Expand."""
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Cast", ["s"], ["s32"], to=TensorProto.INT32),
             helper.make_node("Slice", ["s32", "zero", "one", "zero"], ["b"]),
             helper.make_node("Concat", ["b", "units"], ["bu"], axis=0),
             helper.make_node("Cast", ["bu"], ["bu64"], to=TensorProto.INT64),
             helper.make_node("Expand", ["z", "bu64"], ["zeros"]), helper.make_node("Add", ["zeros", "x"], ["y"])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])]
    if consumer_needs_int32:  # a consumer that computes with the int32 value: the casts must stay
        nodes.append(helper.make_node("Add", ["b", "units"], ["n"]))
        outputs.append(helper.make_tensor_value_info("n", TensorProto.INT32, [1]))
    inits = [numpy_helper.from_array(np.array([0], np.int64), "zero"), numpy_helper.from_array(np.array([1], np.int64),
             "one"), numpy_helper.from_array(np.array([4], np.int32), "units"),
             numpy_helper.from_array(np.array(0.5, np.float32), "z")]
    graph = helper.make_graph(nodes, "zeros", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_shape_casts_are_removed_when_the_graph_still_type_checks():
    import onnx

    from modelkit.targets.tvm.symbolic import shape_casts

    feed = {"x": np.arange(12, dtype=np.float32).reshape(3, 4)}
    model = _zero_state_model(False)
    want = _run(model, feed)
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    rewritten, count = shape_casts(copy)
    assert count == 2 and "Cast" not in [n.op_type for n in rewritten.graph.node]
    onnx.checker.check_model(rewritten, full_check=True)
    np.testing.assert_array_equal(_run(rewritten, feed)[0], want[0])
    kept, count = shape_casts(_zero_state_model(True))
    assert count == 0 and [n.op_type for n in kept.graph.node].count("Cast") == 2


def _gathered_shape_model(perm: tuple[int, int] = (1, 0)) -> object:
    """The zero state after onnxruntime's optimizer (its int8 quantizer runs it): `Gather(Shape(x), perm)` where
    tf2onnx had a Transpose's Shape, then Slice -> Concat -> Expand (nc30: a TimeDistributed CNN + GRU, int8)."""
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Shape", ["x"], ["s"], start=0), helper.make_node("Gather", ["s", "perm"], ["p"]),
             helper.make_node("Slice", ["p", "one", "two", "zero"], ["b"]),
             helper.make_node("Concat", ["b", "units"], ["bu"], axis=0),
             helper.make_node("Expand", ["z", "bu"], ["zeros"]), helper.make_node("Add", ["zeros", "x"], ["y"])]
    inits = [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in
             (("perm", list(perm)), ("zero", [0]), ("one", [1]), ("two", [2]), ("units", [4]))]
    inits.append(numpy_helper.from_array(np.array(0.5, np.float32), "z"))
    graph = helper.make_graph(nodes, "gathered", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_gathers_from_a_shape_become_shape_slices_with_the_same_numbers():
    import onnx

    from modelkit.targets.tvm.symbolic import shape_gathers

    model = _gathered_shape_model()
    feed = {"x": np.arange(12, dtype=np.float32).reshape(3, 4)}
    rewritten, count = shape_gathers(model)
    assert count == 1 and "Gather" not in [n.op_type for n in rewritten.graph.node]
    onnx.checker.check_model(rewritten, full_check=True)
    np.testing.assert_array_equal(_run(rewritten, feed)[0], _run(model, feed)[0])
    assert shape_gathers(_gathered_shape_model((-1, 0)))[1] == 0  # a position from the end: left as it is


@pytest.mark.slow
def test_a_gru_after_onnxruntimes_optimizer_compiles_with_a_dynamic_batch(tmp_path, monkeypatch):
    """onnxruntime's optimizer (run by its int8 quantizer) folds the Transpose before tf2onnx's Shape into
    `Gather(Shape(x), perm)`: TVM then failed to legalize the zero state, and nc30's int8 TVM build (a
    TimeDistributed CNN + GRU) stopped with a bare AssertionError. A graph it still cannot legalize with an open
    batch is compiled at batch 1 (as an import that cannot keep the batch open), its note naming the step."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    from modelkit._backend import import_keras

    keras = import_keras("tensorflow")
    keras.utils.set_random_seed(0)
    x = keras.Input((5, 3), name="x")
    h = keras.layers.Conv1D(4, 2)(x)  # a GRU after another layer: tf2onnx writes its Loop, not an ONNX GRU
    keras.Model(x, keras.layers.Dense(2, name="head")(keras.layers.GRU(4)(h))).save(tmp_path / "gru.keras")
    (r,) = modelkit.convert(tmp_path / "gru.keras", "onnx", out_dir=tmp_path)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    so.optimized_model_filepath = str(tmp_path / "gru_opt.onnx")
    ort.InferenceSession(r.path, so, providers=["CPUExecutionProvider"])
    optimized = onnx.load(tmp_path / "gru_opt.onnx")
    shapes = {n.output[0] for n in optimized.graph.node if n.op_type == "Shape"}
    gathers = [n for n in optimized.graph.node if n.op_type == "Gather" and n.input[0] in shapes]
    assert len(gathers) == 1
    compiled = modelkit.compile(tmp_path / "gru_opt.onnx", "server-cpu")
    assert compiled.batch is None and compiled.parity["ok"]
    perm = next(i for i in optimized.graph.initializer if i.name == gathers[0].input[1])
    positions = numpy_helper.to_array(perm)
    perm.CopyFrom(numpy_helper.from_array(positions - len(positions), perm.name))  # the same, from the end
    onnx.save(optimized, tmp_path / "from_end.onnx")
    # positions from the end: the zero state's shape is traced to the batch axis (sizes.traced_shapes; until
    # 2026-12-05 this graph was compiled at batch 1)
    from modelkit.targets.tvm import sizes
    from modelkit.targets.tvm.edge import onnx_to_tvm

    onnx_to_tvm(tmp_path / "from_end.onnx", tmp_path / "from_end.tvm.so")
    assert modelkit.manifest.read(tmp_path / "from_end.tvm.so").extra["dynamic_batch"] is True
    # without that, TVM cannot legalize it with an open batch: compiled at batch 1, and says why
    monkeypatch.setattr(sizes, "traced_shapes", lambda proto: (proto, 0))
    onnx_to_tvm(tmp_path / "from_end.onnx", tmp_path / "fixed.tvm.so")
    extra = modelkit.manifest.read(tmp_path / "fixed.tvm.so").extra
    assert extra["batch"] == 1 and not extra["dynamic_batch"]
    note = extra["batch_note"]
    assert "emit_te now only supports Tensor that has ShapeExpr" in note and "--batch N" in note


def test_whole_axis_slices_drop_that_axis_and_keep_the_numbers():
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from modelkit.targets.tvm.symbolic import whole_axis_slices

    inits = [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in
             (("starts", [0, 2]), ("ends", [2**31 - 1, 5]), ("axes", [0, 1]), ("tail", [-1]), ("all", [2**62]))]
    graph = helper.make_graph([helper.make_node("Slice", ["x", "starts", "ends", "axes"], ["y"], name="gates"),
                               helper.make_node("Slice", ["x", "tail", "all"], ["z"], name="no_axes")], "s",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3]),
                               helper.make_tensor_value_info("z", TensorProto.FLOAT, [None, 6])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    feed = {"x": np.arange(24, dtype=np.float32).reshape(4, 6)}
    want = _run(model, feed)
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    rewritten, count = whole_axis_slices(copy)
    assert count == 1  # the Slice without axes is left alone
    gates = numpy_helper.to_array(next(i for i in rewritten.graph.initializer if i.name == "gates__mk_axes"))
    assert gates.tolist() == [1]
    onnx.checker.check_model(rewritten, full_check=True)
    for got, expected in zip(_run(rewritten, feed), want):
        np.testing.assert_array_equal(got, expected)


def test_a_zero_state_of_the_batch_compiles_with_a_dynamic_batch(tmp_path):
    """Without the rewrite, TVM fails to legalize the Expand ("emit_te now only supports Tensor that has
    ShapeExpr shape"), as it did for the zoo's lstm and gru."""
    import onnx

    onnx.save(_zero_state_model(False), tmp_path / "zeros.onnx")
    r = modelkit.compile(tmp_path / "zeros.onnx", "server-cpu")
    assert r.batch is None and r.parity["ok"]
    x = np.arange(20, dtype=np.float32).reshape(5, 4)
    np.testing.assert_array_equal(modelkit.load(r.path).predict({"x": x})["y"], x + 0.5)


def test_a_bidirectional_gru_node_compiles_with_a_dynamic_batch_and_matches(tmp_path):
    """The fast end-to-end check: an ONNX GRU (the importer has none) through modelkit.compile, verified
    against onnxruntime by the hop, then run here at two batch sizes."""
    import onnx

    model = _rnn_model("GRU", direction="bidirectional", lbr=1, init=True)
    onnx.save(model, tmp_path / "gru.onnx")
    r = modelkit.compile(tmp_path / "gru.onnx", "server-cpu")
    assert r.batch is None and r.parity["ok"]
    lib = modelkit.load(r.path)
    for batch in (1, 6):
        feed = _feed(model, batch, seed=batch)
        for got, want in zip(lib.predict(feed).values(), _run(model, feed)):
            np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.slow
def test_an_open_length_lstm_is_refused_naming_the_op_and_why(tmp_path):
    import onnx

    onnx.save(_rnn_model("LSTM", steps="T"), tmp_path / "open.onnx")
    with pytest.raises(UnsupportedConversionError, match=r"not supported for frontend ONNX: LSTM.*LSTM 'rnn': its "
                                                         r"sequence length is not fixed.*--input-spec"):
        modelkit.compile(tmp_path / "open.onnx", "server-cpu")
    from modelkit.cli import main

    res = CliRunner().invoke(main, ["compile", str(tmp_path / "open.onnx"), "--target", "server-cpu"])
    assert res.exit_code == 2 and "Traceback" not in res.output
    lines = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "LSTM 'rnn': its sequence length is not fixed" in lines[0]


def _keras_model(kind: str, path: str) -> str:
    """Small Keras models, built in a child under TensorFlow (tf2onnx writes an LSTM node for a plain LSTM,
    a Loop for a GRU, straight-line cells for unroll=True)."""
    import keras

    keras.utils.set_random_seed(0)
    L = keras.layers
    x = keras.Input((7, 5), name="seq")
    if kind == "lstm":
        y = L.Dense(3)(L.LSTM(6)(x))
    elif kind == "bilstm_sequences":
        y = L.Dense(3)(L.Bidirectional(L.LSTM(6, return_sequences=True))(x))
    elif kind == "gru":
        y = L.Dense(3)(L.GRU(6, reset_after=False)(x))
    elif kind == "unrolled_lstm_gru":
        y = L.Dense(3)(L.GRU(5, unroll=True)(L.LSTM(6, unroll=True, return_sequences=True)(x)))
    elif kind == "masked_lstm":  # tf2onnx writes a masked LSTM as a Loop (loops.py unrolls it), zero state and all
        y = L.Dense(3)(L.LSTM(6)(L.Masking(0.0)(x)))
    elif kind == "attention":
        h = L.MultiHeadAttention(2, 4)(x, x)
        y = L.Dense(3)(L.GlobalAveragePooling1D()(L.LayerNormalization()(L.Add()([x, h]))))
    else:
        raise ValueError(kind)
    keras.Model(x, y).save(path)
    return path


def _compiles_and_matches(tmp_path: Path, kind: str) -> None:
    src = Path(_child.run("tests.targets.test_tvm_rnn:_keras_model", {"kind": kind, "path": str(tmp_path / "m.keras")},
                          backend="tensorflow", quiet=True))
    r = modelkit.compile(src, "server-cpu")
    keras_model, lib = modelkit.load(src), modelkit.load(r.path)
    fixed = lib.signature.inputs[0].shape[0]
    # recurrent layers keep the batch dynamic, and attention too: its computed head Reshape is made constant
    # (modelkit/targets/tvm/reshapes.py; it compiled at batch 1 before)
    assert r.parity["ok"] and fixed is None, (kind, fixed)
    x = np.random.default_rng(5).normal(size=(4, 7, 5)).astype(np.float32)
    x[:, 5:], x[0, 2:4] = 0.0, 0.0  # padding (masked_lstm skips these steps) at the end and inside
    want = keras_model.predict({"seq": x})
    got = [lib.predict({"seq": x[i:i + 1] if fixed else x}) for i in range(4 if fixed else 1)]
    for name, expected in want.items():
        np.testing.assert_allclose(np.concatenate([g[name] for g in got]), expected, atol=1e-4, err_msg=kind)


@pytest.mark.slow  # 20-35 s each on a loaded 2-core machine; the fast checks above cover each mechanism
@pytest.mark.parametrize("kind", ["lstm", "bilstm_sequences", "gru", "unrolled_lstm_gru", "masked_lstm", "attention"])
def test_keras_recurrent_and_attention_models_compile_with_tvm(tmp_path, kind):
    _compiles_and_matches(tmp_path, kind)
