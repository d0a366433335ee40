"""A mixture of experts with top-k routing (nc71: digits, two layers of four experts, each row sent to its top two
by `ops.top_k`, weighted through `ops.one_hot`, the experts as one `einsum`). TVM compiled tf2onnx's graph only
at batch 1: TVM's importer makes float64 of a float32 OneHot, which modelkit mends with a Cast after it, and the
simplifier that folds batch-computed Reshape targets (reshapes.py, dynamic batch only) dropped that Cast as a
no-op; the mend now runs last."""
from __future__ import annotations

import json

import numpy as np
import pytest

import modelkit
from tests.helpers.user_code import keras_beside

pytest.importorskip("tvm", reason="TVM is not installed (pip install 'modelkit[tvm]')")

MOE = '''import keras
from keras import ops


@keras.saving.register_keras_serializable(package="moe")
class TopKMoE(keras.layers.Layer):
    def __init__(self, experts=4, units=8, k=2, **kwargs):
        super().__init__(**kwargs)
        self.experts, self.units, self.k = experts, units, k

    def build(self, shape):
        self.gate = self.add_weight(shape=(shape[-1], self.experts), name="gate")
        self.w = self.add_weight(shape=(self.experts, shape[-1], self.units), name="w")

    def call(self, x):
        top, idx = ops.top_k(ops.matmul(x, self.gate), self.k)
        route = ops.sum(ops.one_hot(idx, self.experts) * ops.softmax(top)[..., None], axis=1)
        return ops.relu(ops.einsum("be,beu->bu", route, ops.einsum("bd,edu->beu", x, self.w)))

    def get_config(self):
        return {**super().get_config(), "experts": self.experts, "units": self.units, "k": self.k}
'''


@pytest.mark.slow
def test_a_top_k_mixture_of_experts_compiles_with_a_dynamic_batch(tmp_path):
    moe, keras = keras_beside(tmp_path, "moe", MOE)
    x = keras.Input((12,), name="features")
    model = keras.Model(x, keras.layers.Dense(3, name="p")(moe.TopKMoE()(x)))
    model.save(tmp_path / "moe.keras")
    results = modelkit.convert(tmp_path / "moe.keras", "tvm", out_dir=tmp_path / "out",
                               imports=[str(tmp_path / "moe.py")])
    lib = next(r for r in results if r.format == "tvm")
    extra = json.loads((tmp_path / "out" / "moe.tvm.so.modelkit.json").read_text())["extra"]
    assert extra["dynamic_batch"] and extra["batch_note"] is None, extra["batch_note"]
    feed = np.random.default_rng(1).random((5, 12), dtype=np.float32)
    np.testing.assert_allclose(modelkit.load(lib.path).predict(feed)["p"], model.predict(feed, verbose=0), atol=1e-4)
