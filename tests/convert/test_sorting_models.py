"""Models that sort (nc65: digit rows pooled by a trimmed mean, `ops.sort` over time, and the top-3 rows by energy,
`ops.argsort` then `ops.take_along_axis`, beside `ops.cumsum` and `ops.where`; trained on TF, JAX and torch).

Three formats failed: pt2 and ExecuTorch ("Constraints violated (batch)": Keras' torch take_along_axis broadcasts
with torch.take_along_dim, which reads the batch as an int), ExecuTorch once that was mended (aten.sort.stable is
not in its Core ATen op set; sort and argsort are now topk of every element), and TVM ("emit_te now only supports
Tensor that has ShapeExpr shape": the Expand tf2onnx writes for take_along_axis has a shape computed from the
batch, unknown to legalization; compiled at batch 1, as for an import that cannot keep the batch open, until
2026-12-05: that shape is now traced to the batch axis, modelkit/targets/tvm/sizes.py, and the batch stays open)."""
from __future__ import annotations

import numpy as np
import pytest

import modelkit
from tests.helpers.user_code import keras_beside

ROBUST = '''import keras
from keras import ops


@keras.saving.register_keras_serializable(package="robust")
class TrimmedMean(keras.layers.Layer):
    def call(self, x):
        return ops.mean(ops.sort(x, axis=1)[:, 2:-2, :], axis=1)


@keras.saving.register_keras_serializable(package="robust")
class TopRows(keras.layers.Layer):
    def call(self, x):
        energy = ops.sum(x * x, axis=-1)
        order = ops.argsort(energy, axis=-1)
        top = ops.take_along_axis(x, ops.expand_dims(order[:, -3:], -1), axis=1)
        total = ops.cumsum(x, axis=1)[:, -1, :]
        gate = ops.where(ops.max(energy, axis=-1, keepdims=True) > 1.0, total, -total)
        return ops.concatenate([ops.reshape(top, (-1, 3 * x.shape[-1])), gate], axis=-1)
'''


@pytest.mark.slow
def test_a_model_that_sorts_converts_to_pt2_executorch_and_tvm(tmp_path):
    pytest.importorskip("executorch")
    pytest.importorskip("tvm")
    robust, keras = keras_beside(tmp_path, "robust", ROBUST)
    rows = keras.Input((8, 8), name="rows")
    h = keras.layers.Dense(6, activation="relu")(rows)
    both = keras.layers.Concatenate()([robust.TrimmedMean()(h), robust.TopRows()(h)])
    keras.Model(rows, keras.layers.Dense(10, activation="softmax", name="probs")(both)).save(tmp_path / "rows.keras")
    results = modelkit.convert(tmp_path / "rows.keras", "pt2,executorch,tvm", out_dir=tmp_path / "out",
                               imports=[str(tmp_path / "robust.py")])
    assert sorted(r.format for r in results) == ["executorch", "onnx", "pt2", "tvm"]
    feed = np.random.default_rng(1).random((3, 8, 8), dtype=np.float32)
    want = modelkit.load(tmp_path / "rows.keras").predict(feed)["probs"]
    for r in results:  # the batch stays open in every format (TVM's too since sizes.traced_shapes)
        model = modelkit.load(r.path)
        assert model.signature.inputs[0].shape[0] is None, r.format
        np.testing.assert_allclose(model.predict(feed)["probs"], want, atol=1e-5)
