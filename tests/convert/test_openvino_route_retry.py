"""OpenVINO refuses the ONNX Loop tf2onnx writes for a masked LSTM / GRU. convert said "convert again with
--route torch" and stopped (nc30's TimeDistributed + GRU clip classifier, `--to all`); optimize retried by matching
that text. convert now takes the torch route for that hop itself, beside the tf2onnx file, unless the user picked
the tf2onnx route."""
from __future__ import annotations

import json

import pytest

import modelkit
from modelkit.errors import SourceRouteError
from tests.helpers.models import make_masked_lstm
from tests.helpers.user_code import write_module

pytest.importorskip("openvino")
pytest.importorskip("torch")


@pytest.fixture(scope="module")
def rnn(tmp_path_factory):
    src = tmp_path_factory.mktemp("rnn") / "rnn.keras"
    make_masked_lstm(src, units=8, classes=3)
    return src


@pytest.mark.slow
def test_openvino_takes_the_torch_route_when_tf2onnx_writes_a_loop(rnn, tmp_path, capfd):
    results = modelkit.convert(rnn, "openvino", out_dir=tmp_path)
    err = capfd.readouterr().err
    assert ("openvino: rnn.onnx: tf2onnx wrote the model's loop (a recurrent layer's, ops.fori_loop's) as an ONNX "
            "Loop, which OpenVINO's frontend does not take; converting rnn.keras to rnn.torch.onnx by the torch route "
            "instead") in err
    by_path = {r.path: r for r in results}
    ov = by_path[str(tmp_path / "rnn_openvino")]
    assert ov.format == "openvino" and ov.parity["ok"]
    assert by_path[str(tmp_path / "rnn.onnx")].route["taken"] == "tf2onnx"  # the first file stays as it was
    assert by_path[str(tmp_path / "rnn.torch.onnx")].route["taken"] == "torch"
    chain = json.loads((tmp_path / "rnn_openvino.modelkit.json").read_text())["chain"]
    assert [e["converter"].rsplit(":", 1)[1] for e in chain] == ["keras_to_onnx_torch", "onnx_to_openvino"]
    model = modelkit.load(tmp_path / "rnn_openvino")
    assert model.engine == "openvino" and model.signature.output_names


@pytest.mark.slow
def test_a_picked_tf2onnx_route_is_kept_and_the_error_says_what_to_do(rnn, tmp_path):
    with pytest.raises(SourceRouteError, match=r"OpenVINO could not convert rnn.onnx: .*Loop.*convert again with "
                                               r"--route torch --force") as info:
        modelkit.convert(rnn, "openvino", out_dir=tmp_path, options={"route": "tf2onnx"})
    assert info.value.report["route"] == "torch"
    assert not (tmp_path / "rnn_openvino").exists() and not (tmp_path / "rnn.torch.onnx").exists()


EXPERTS = '''import keras


@keras.saving.register_keras_serializable(package="experts")
class Experts(keras.layers.Layer):
    """Every expert at once (one einsum over stacked kernels), mixed by a softmax gate (another einsum)."""

    def build(self, shape):
        self.gate = self.add_weight(shape=(shape[-1], 4), name="gate")
        self.kernels = self.add_weight(shape=(4, shape[-1], 5), name="kernels")

    def call(self, x):
        ops = keras.ops
        weights = ops.softmax(ops.matmul(x, self.gate), axis=-1)
        return ops.einsum("beu,be->bu", ops.einsum("bd,edu->beu", x, self.kernels), weights)
'''


@pytest.mark.slow
def test_an_einsum_graph_openvino_refused_converts_from_tf2onnxs_graph(tmp_path, capfd):
    """nc46's mixture of experts (experts as one einsum): OpenVINO's frontend refused the graph tf2onnx wrote for
    the einsum (an Unsqueeze of no axes, which it reads as adding one, under a Transpose of 3 axes; onnxruntime runs
    it), so `--to all` wrote every format but openvino; then the torch route's ONNX was taken. The Unsqueeze is
    written as the Identity it is (keras_onnx.unsqueeze_nothing_as_identity, nc94): tf2onnx's graph converts. (Other
    refusals of tf2onnx's graph still take the torch route: tests/convert/test_openvino_frontend_errors.py.)"""
    from modelkit._backend import import_keras

    experts = write_module(tmp_path, "experts", EXPERTS)
    keras = import_keras()
    keras.utils.set_random_seed(0)
    x = keras.Input((6,), name="x")
    keras.Model(x, keras.layers.Dense(3, name="y")(experts.Experts()(x))).save(tmp_path / "moe.keras")
    results = modelkit.convert(tmp_path / "moe.keras", "openvino", out_dir=tmp_path,
                               imports=[str(tmp_path / "experts.py")])
    assert "torch route" not in capfd.readouterr().err and not (tmp_path / "moe.torch.onnx").exists()
    ov = next(r for r in results if r.format == "openvino")
    assert ov.parity["ok"] and ov.parity["outputs"][0]["max_abs"] < 1e-4
    chain = json.loads((tmp_path / "moe_openvino.modelkit.json").read_text())["chain"]
    assert [e["converter"].rsplit(":", 1)[1] for e in chain] == ["keras_to_onnx", "onnx_to_openvino"]


def test_the_torch_routes_length_refusal_names_its_format_and_the_fix():
    """nc34: a GRU over frames of any length to OpenVINO (the torch route's ONNX) was refused saying "pt2 would run
    at that size only" (pt2 itself converts it), with no way forward; the refusal names the route and the fix."""
    from modelkit.converters._torch_dims import refusal

    text = refusal("onnx (route 'torch')", "torch.export", "series", 1, "'gru_cell' (GRUCell)")
    assert "onnx (route 'torch') would run at that size only" in text and "pt2" not in text
    assert "onnx by its default route (tf2onnx), saved_model" in text and "(--input-spec)" in text


REFINE = '''import keras


@keras.saving.register_keras_serializable(package="refine")
class Refine(keras.layers.Layer):
    def build(self, shape):
        self.w = self.add_weight(shape=(shape[-1], shape[-1]), initializer="glorot_uniform", name="w")

    def call(self, x):
        return keras.ops.fori_loop(0, 3, lambda i, h: h + 0.5 * keras.ops.tanh(keras.ops.matmul(h, self.w)), x)
'''


@pytest.mark.slow
def test_a_fori_loop_reaches_tvm_and_openvino_through_one_torch_export(tmp_path, capfd):
    """nc55's iterative refinement layer (ops.fori_loop): tf2onnx writes a Loop whose condition its body computes,
    which TVM's importer refused ("not supported for frontend ONNX: Loop"; no pass unrolls it) and OpenVINO's
    frontend refused. Both now take torch.onnx's export, which traces the loop into its steps, made once for both
    (two hops asking for it failed with "rnn.torch.onnx exists")."""
    from modelkit._backend import import_keras

    refine = write_module(tmp_path, "refine", REFINE)
    keras = import_keras("tensorflow")
    keras.utils.set_random_seed(0)
    x = keras.Input((5,), name="x")
    keras.Model(x, keras.layers.Dense(3, name="scores")(refine.Refine()(keras.layers.Dense(8)(x)))).save(
        tmp_path / "loop.keras")
    results = modelkit.convert(tmp_path / "loop.keras", "tvm,openvino", out_dir=tmp_path / "out",
                               imports=[str(tmp_path / "refine.py")])
    err = capfd.readouterr().err
    assert "tvm: loop.onnx: tf2onnx wrote the model's loop as an ONNX Loop whose number of steps the graph" in err
    assert err.count("keras -> onnx (route torch): wrote") == 1
    by_format = {r.format: r for r in results}
    assert by_format["tvm"].parity["ok"] and by_format["openvino"].parity["ok"]
    tvm_manifest = json.loads((tmp_path / "out" / "loop.tvm.so.modelkit.json").read_text())
    assert tvm_manifest["source"]["path"].endswith("loop.torch.onnx")


@pytest.mark.slow
def test_compile_of_that_loop_says_how_to_export_it_by_torch(tmp_path, monkeypatch):
    """`modelkit compile` compiles the ONNX it is given: it crashed (KeyError 'path') on the retry convert takes;
    it now raises the typed error with the two commands that compile the model."""
    from modelkit._backend import import_keras
    from modelkit.errors import SourceRouteError
    from modelkit.targets import compile as compile_model

    refine = write_module(tmp_path, "refine", REFINE)
    monkeypatch.setenv("MODELKIT_IMPORTS", str(tmp_path / "refine.py"))  # as `modelkit --import refine.py compile`
    keras = import_keras("tensorflow")
    x = keras.Input((5,), name="x")
    keras.Model(x, keras.layers.Dense(3, name="scores")(refine.Refine()(x))).save(tmp_path / "loop.keras")
    with pytest.raises(SourceRouteError, match=r"Loop whose number of steps the graph computes.*compile takes the ONNX "
                                               r"as it is: export it by torch.onnx first \(modelkit convert loop.keras "
                                               r"--to onnx --route torch --out DIR\), then compile DIR/loop.onnx$"):
        compile_model(tmp_path / "loop.keras", "server-cpu", out=tmp_path / "out")
