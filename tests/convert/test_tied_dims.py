"""A model whose open dimensions must agree across inputs and axes (nc185): a graph network over N nodes, node
features (N, F) and an adjacency matrix (N, N), from a newcomer's registered GraphConv layer. It runs at no size
where those differ, except an (N, 1) adjacency, which broadcasts into garbage. modelkit verifies it where they
agree (parity at 1, 13 and 64 nodes, the broadcast cases dropped), traces it for torch with one size for all
(torch.export ties them), the ExecuTorch engine refuses inputs where they differ (its runtime would compute garbage),
and every --input-spec advice and refusal names all the inputs with an open size."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import modelkit
from modelkit.cli import main
from modelkit.errors import ShapeError
from modelkit.formats import manifest_path
from tests.helpers.cli import one_line_error
from tests.helpers.user_code import keras_beside

GRAPH_CONV = '''import keras
from keras import ops


@keras.saving.register_keras_serializable(package="graphs")
class GraphConv(keras.layers.Layer):
    def __init__(self, units, **kw):
        super().__init__(**kw)
        self.units = units

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[0][-1], self.units), initializer="glorot_uniform", name="w")

    def call(self, inputs):
        h, a = inputs
        a = a + ops.eye(ops.shape(a)[-1], dtype=a.dtype)
        inv = ops.rsqrt(ops.sum(a, axis=-1))
        return ops.relu(ops.matmul(a * inv[:, :, None] * inv[:, None, :], ops.matmul(h, self.w)))

    def get_config(self):
        return {**super().get_config(), "units": self.units}
'''
TIED = [["features:1", "adjacency:1", "adjacency:2"]]


@pytest.fixture(scope="module")
def gcn(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gcn")
    layers, keras = keras_beside(folder, "graph_layers", GRAPH_CONV)
    feat, adj = keras.Input((None, 4), name="features"), keras.Input((None, None), name="adjacency")
    h = layers.GraphConv(8)([layers.GraphConv(8)([feat, adj]), adj])
    out = keras.layers.Dense(3, activation="softmax", name="p")(keras.layers.GlobalAveragePooling1D()(h))
    keras.Model([feat, adj], out).save(folder / "gcn.keras")
    return folder / "gcn.keras", str(folder / "graph_layers.py")


def _graphs(n: int, nodes: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    up = np.triu(rng.random((n, nodes, nodes)) < 0.3, 1)
    return {"features": rng.random((n, nodes, 4), dtype=np.float32), "adjacency": (up | up.transpose(0, 2, 1))
            .astype(np.float32)}


def _agree(case: dict) -> bool:
    shapes = case["shapes"]
    return shapes["features"][1] == shapes["adjacency"][1] == shapes["adjacency"][2]


def test_verified_only_where_the_tied_dims_agree(gcn, tmp_path):
    src, module = gcn
    results = modelkit.convert(src, "onnx,tflite", out_dir=tmp_path, imports=[module])
    for r in results:
        assert r.parity["ok"], (r.format, r.parity)
        assert all(_agree(c) for c in r.parity["cases"]), (r.format, r.parity["cases"])
        assert sorted({c["shapes"]["features"][1] for c in r.parity["cases"]}) == [1, 13, 64]
        dropped = [s for s in r.parity["skipped_cases"] if "open dimensions are tied" in s["reason"]]
        assert dropped and not any(_agree(s) for s in dropped)  # the (N, 1) adjacency that broadcast
        x = _graphs(5, 20, seed=1)  # real 0/1 graphs of a size no check used
        np.testing.assert_allclose(modelkit.load(r.path).predict(x)["p"], modelkit.load(src, imports=[module])
                                   .predict(x)["p"], atol=1e-5)


def test_int8_passes_where_only_broadcast_cases_failed(gcn, tmp_path):
    src, module = gcn
    x = _graphs(120, 12, seed=2)
    y = modelkit.load(src, imports=[module]).predict(x)["p"].argmax(-1)
    np.savez(tmp_path / "eval.npz", **x, y=y)
    np.savez(tmp_path / "calib.npz", **_graphs(64, 16, seed=3))
    (r,) = modelkit.convert(src, "tflite", out_dir=tmp_path, imports=[module], quantize="int8",
                            calibration_data=tmp_path / "calib.npz", eval_data=tmp_path / "eval.npz")
    assert r.accuracy["ok"] and all(_agree(c) for c in r.parity["cases"])


def test_executorch_ties_them_and_refuses_inputs_where_they_differ(gcn, tmp_path):
    pytest.importorskip("executorch")
    src, module = gcn
    (r,) = modelkit.convert(src, "executorch", out_dir=tmp_path, imports=[module])
    assert r.parity["ok"]
    assert json.loads(manifest_path(r.path).read_text())["extra"]["tied_dims"] == TIED
    shown = CliRunner().invoke(main, ["inspect", r.path])
    assert shown.exit_code == 0 and ("one size: 'features' dimension 1 = 'adjacency' dimension 1 = 'adjacency' "
                                     "dimension 2 (the model computes them together") in shown.output
    pte, x = modelkit.load(r.path), _graphs(3, 9, seed=4)
    np.testing.assert_allclose(pte.predict(x)["p"], modelkit.load(src, imports=[module]).predict(x)["p"], atol=1e-5)
    with pytest.raises(ShapeError, match=r"^'features' dimension 1 is 9, 'adjacency' dimension 1 is 5, 'adjacency' "
                                         r"dimension 2 is 5: gcn.pte takes them at one size"):
        pte.predict({"features": x["features"], "adjacency": _graphs(3, 5, seed=5)["adjacency"]})


def test_advice_names_every_input_with_an_open_size(gcn, tmp_path):
    src, module = gcn
    line = one_line_error(["-q", "convert", str(src), "--to", "tvm", "--import", module, "--out", str(tmp_path)])
    assert line.endswith("for TVM, fix it with --input-spec features:?,64,4:float32 --input-spec "
                         "adjacency:?,64,64:float32 (modelkit compile gcn.onnx or MODEL.keras, or modelkit convert "
                         "MODEL.keras --to tvm)"), line
    line = one_line_error(["-q", "convert", str(src), "--to", "tvm", "--import", module, "--out",
                           str(tmp_path / "partial"), "--input-spec", "features:?,12,4:float32"])
    assert line.startswith(f"error: {src}: the model does not build at the input shapes features (?, 12, 4) (")
    assert line.endswith("name the others with an open size too ('adjacency' (None, None, None))"), line
    # the advice followed where the first try left its open gcn.onnx: that file is not reused at other shapes
    specs = ["--input-spec", "features:?,12,4:float32", "--input-spec", "adjacency:?,12,12:float32"]
    line = one_line_error(["-q", "convert", str(src), "--to", "tvm", "--import", module, "--out", str(tmp_path),
                           *specs])
    assert "gcn.onnx" in line and "--force" in line and "TVM cannot compile" not in line, line
    r = modelkit.convert(src, "tvm", out_dir=tmp_path, imports=[module], force=True, input_spec=specs[1::2])
    assert r[0].parity["ok"] and modelkit.load(r[0].path).predict(_graphs(2, 12, seed=6))["p"].shape == (2, 3)
