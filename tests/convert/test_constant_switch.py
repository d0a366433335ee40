"""nc161: `keras.ops.switch` on a layer's configured mode (a Python int), in a user's layer.

Found converting it with `--to all`: Keras' TensorFlow backend builds tf.switch_case even for a constant index, and
tf2onnx wrote an invalid graph ("No Op registered for _SwitchN"); ONNX then depended on the torch route. The TF edges
now call the branch a constant index picks (modelkit.converters._tf_switch).
"""
from __future__ import annotations

import numpy as np
import pytest

import modelkit
from modelkit._backend import import_keras
from tests.helpers.user_code import write_module

GATE = '''import keras
from keras import ops


@keras.saving.register_keras_serializable(package="gate")
class Gate(keras.layers.Layer):
    def __init__(self, mode=1, **kwargs):
        super().__init__(**kwargs)
        self.mode = mode

    def call(self, x):
        return ops.switch(self.mode, [lambda v: v * 2.0, lambda v: ops.tanh(v), lambda v: -v], x)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}
'''


@pytest.mark.slow
def test_a_switch_on_a_constant_mode_converts_by_tf2onnx(tmp_path):
    gate = write_module(tmp_path, "gate", GATE)
    keras = import_keras("tensorflow")
    keras.utils.set_random_seed(0)
    x = keras.Input((6,), name="x")
    h = gate.Gate(1)(keras.layers.Dense(6)(x))
    keras.Model(x, keras.layers.Dense(2, name="y")(gate.Gate(2)(h))).save(tmp_path / "gate.keras")
    (r,) = modelkit.convert(tmp_path / "gate.keras", to="onnx", out_dir=tmp_path / "out",
                            imports=[str(tmp_path / "gate.py")])
    assert r.route["taken"] == "tf2onnx" and not r.route.get("tried") and r.max_abs < 1e-5
    feed = np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32) * 3
    want = keras.models.load_model(tmp_path / "gate.keras")(feed).numpy()
    np.testing.assert_allclose(modelkit.load(r.path).predict(feed)["y"], want, atol=1e-5)
