"""A graph network (nc66: node features and a padded edge list per graph, messages gathered with
`ops.take_along_axis` and summed per node with `ops.segment_sum` over (graph, node) ids, two rounds, a masked
readout; trained on JAX, torch and TF).

Three formats failed: pt2 and ExecuTorch exported a program that ran only at the traced batch ("Runtime assertion
failed for expression u0 >= 768": Keras' torch segment reduction repeats the ids by a count computed as a tensor);
ExecuTorch then had no kernel for scatter_reduce (a sum is now scatter_add); and TVM's importer refused tf2onnx's
segment_sum (Unique and a ScatterND of indices of unknown shape: "'NoneType' object is not subscriptable"), which
now goes the torch route, as a Loop it cannot take does."""
from __future__ import annotations

import numpy as np
import pytest

import modelkit
from tests.helpers.user_code import keras_beside

NODES, EDGES, FEATURES = 6, 10, 3

GNN = f'''import keras
from keras import ops

NODES = {NODES}


@keras.saving.register_keras_serializable(package="gnn")
class MessagePassing(keras.layers.Layer):
    def __init__(self, units, **kw):
        super().__init__(**kw)
        self.units = units
        self.msg = keras.layers.Dense(units, activation="relu")
        self.upd = keras.layers.Dense(units, activation="relu")

    def call(self, nodes, edges):
        b = ops.shape(nodes)[0]
        valid = ops.cast(edges[..., 0] >= 0, nodes.dtype)
        src, dst = ops.maximum(edges[..., 0], 0), ops.maximum(edges[..., 1], 0)
        sent = self.msg(ops.take_along_axis(nodes, ops.expand_dims(src, -1), axis=1)) * ops.expand_dims(valid, -1)
        ids = ops.reshape(dst + ops.expand_dims(ops.arange(b, dtype="int32") * NODES, -1), (-1,))
        summed = ops.segment_sum(ops.reshape(sent, (-1, self.units)), ids, num_segments=b * NODES)
        return self.upd(ops.concatenate([nodes, ops.reshape(summed, (b, NODES, self.units))], -1))

    def get_config(self):
        return {{**super().get_config(), "units": self.units}}
'''


@pytest.mark.slow
def test_a_graph_network_converts_to_pt2_executorch_and_tvm(tmp_path):
    pytest.importorskip("executorch")
    pytest.importorskip("tvm")
    gnn, keras = keras_beside(tmp_path, "gnn", GNN)
    nodes = keras.Input((NODES, FEATURES), name="nodes")
    edges = keras.Input((EDGES, 2), dtype="int32", name="edges")
    h = gnn.MessagePassing(8)(gnn.MessagePassing(8)(nodes, edges), edges)
    out = keras.layers.Dense(1, activation="sigmoid", name="active")(keras.layers.GlobalAveragePooling1D()(h))
    keras.Model([nodes, edges], out).save(tmp_path / "gnn.keras")
    rng = np.random.default_rng(0)
    feed = {"nodes": rng.standard_normal((5, NODES, FEATURES)).astype(np.float32),
            "edges": rng.integers(0, NODES, (5, EDGES, 2)).astype(np.int32)}
    feed["edges"][:, 7:] = -1  # padding
    np.savez(tmp_path / "graphs.npz", **feed)
    results = modelkit.convert(tmp_path / "gnn.keras", "pt2,executorch,tvm", out_dir=tmp_path / "out",
                               imports=[str(tmp_path / "gnn.py")], data=str(tmp_path / "graphs.npz"))
    by_format = {r.format: r for r in results if not r.path.endswith(".onnx")}
    assert sorted(by_format) == ["executorch", "pt2", "tvm"]
    assert any(r.path.endswith("gnn.torch.onnx") for r in results)  # TVM compiled the torch route's ONNX
    want = modelkit.load(tmp_path / "gnn.keras").predict(feed)["active"]
    for fmt in ("pt2", "executorch"):  # the batch stays open
        np.testing.assert_allclose(modelkit.load(by_format[fmt].path).predict(feed)["active"], want, atol=1e-5)
    tvm = modelkit.load(by_format["tvm"].path)  # compiled at batch 1
    got = np.concatenate([tvm.predict({k: v[i:i + 1] for k, v in feed.items()})["active"] for i in range(5)])
    np.testing.assert_allclose(got, want, atol=1e-5)
