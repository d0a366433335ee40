"""Models trained under a mixed dtype policy (`mixed_float16`, `mixed_bfloat16`: float32 weights, half-precision
compute; nc50). They were refused by TFLite ("Conv2D ... no TFLite builtin") and failed ONNX parity at 4e-4 to
6e-4 (each engine rounds the float16 intermediates its own way); they now compute in float32, the weights
unchanged (modelkit.keras_io.policy), said once on stderr and recorded in each manifest."""
from __future__ import annotations

import json

import numpy as np
import pytest

import modelkit
from modelkit.keras_io.policy import POLICY_ATTR, saved_mixed_policy
from tests.helpers.user_code import write_module

NET = '''import keras


@keras.saving.register_keras_serializable(package="mixed")
class Net(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden = keras.layers.Dense(16, activation="relu", dtype="mixed_float16")
        self.head = keras.layers.Dense(3, dtype="mixed_float16")

    def call(self, x):
        return keras.ops.cast(self.head(self.hidden(x)), "float32")
'''


def _mixed_cnn(keras, policy: str):
    keras.utils.set_random_seed(0)
    x = keras.Input((8, 8, 1), name="image")
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", dtype=policy)(x)
    h = keras.layers.BatchNormalization(dtype=policy)(h)
    h = keras.layers.Conv2D(16, 3, activation="relu", dtype=policy)(h)
    h = keras.layers.GlobalAveragePooling2D(dtype=policy)(h)
    p = keras.layers.Activation("softmax", dtype="float32", name="probs")(keras.layers.Dense(10, dtype=policy)(h))
    return keras.Model(x, p)


@pytest.mark.slow
def test_a_mixed_float16_cnn_converts_to_tflite_and_onnx_computing_in_float32(tmp_path, capfd):
    from modelkit._backend import import_keras

    keras = import_keras("tensorflow")
    model = _mixed_cnn(keras, "mixed_float16")
    model.save(tmp_path / "cnn.keras")
    feed = np.random.default_rng(0).random((16, 8, 8, 1), dtype=np.float32)
    half = np.asarray(model(feed))
    results = modelkit.convert(tmp_path / "cnn.keras", "tflite,onnx", out_dir=tmp_path / "out")
    assert "saved with dtype policy mixed_float16" in capfd.readouterr().err
    float32 = _mixed_cnn(keras, "float32")
    float32.set_weights(model.get_weights())
    exact = np.asarray(float32(feed))
    for r in results:
        assert r.parity["ok"]
        got = modelkit.load(r.path).predict({"image": feed})["probs"]
        np.testing.assert_allclose(got, exact, atol=1e-5)  # the float32 function of the same weights
        manifest = json.loads(open(f"{r.path}.modelkit.json").read())
        assert manifest["extra"]["source_dtype_policy"] == {"policy": "mixed_float16", "computed_in": "float32"}
    assert 1e-5 < np.abs(half - exact).max() < 1e-2  # what float16 compute costs here, which the artifacts do not pay


def test_a_subclassed_mixed_model_computes_in_float32_in_place(tmp_path):
    from modelkit._backend import import_keras
    from modelkit.keras_io.files import load_keras

    module = write_module(tmp_path, "mixed_net", NET)
    keras = import_keras("tensorflow")
    keras.utils.set_random_seed(1)
    net = module.Net()
    feed = np.random.default_rng(1).standard_normal((4, 6)).astype(np.float32)
    net(feed)
    net.save(tmp_path / "net.keras")
    loaded = load_keras(tmp_path / "net.keras")
    assert getattr(loaded, POLICY_ATTR) == "mixed_float16"
    assert {layer.compute_dtype for layer in loaded._flatten_layers() if layer.weights} == {"float32"}
    hidden = np.maximum(feed @ net.hidden.kernel.numpy() + net.hidden.bias.numpy(), 0)
    np.testing.assert_allclose(np.asarray(loaded(feed)), hidden @ net.head.kernel.numpy() + net.head.bias.numpy(),
                               atol=1e-5)


def test_the_saved_policy_is_read_from_the_config_alone():
    dense = {"class_name": "Dense", "config": {"dtype": {"module": "keras", "class_name": "DTypePolicy",
                                                         "config": {"name": "mixed_bfloat16"}}}}
    assert saved_mixed_policy({"config": {"layers": [{"class_name": "InputLayer", "config": {"dtype": "float32"}},
                                                     dense]}}) == "mixed_bfloat16"
    assert saved_mixed_policy({"config": {"layers": [{"config": {"dtype": "float16"}}]}}) is None
