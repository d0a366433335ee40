"""A model that answers with its class id (keras.ops.argmax inside it, nc48). Keras' TensorFlow backend tells -0.0
from 0.0 first, by Bitcast and BitwiseAnd: no TFLite builtin and no ONNX op, so TFLite refused the model and tf2onnx
wrote an invalid graph (only the torch route converted it). Traced as TF's own argmax
(modelkit.converters._tf_lowering), both convert with the class ids intact."""
from __future__ import annotations

import numpy as np
import pytest

import modelkit
from tests.helpers.user_code import write_module

HEADS = '''import keras


@keras.saving.register_keras_serializable(package="heads")
class Label(keras.layers.Layer):
    def call(self, p):
        return keras.ops.cast(keras.ops.argmax(p, axis=-1), "int32")

    def compute_output_shape(self, shape):
        return shape[:-1]


@keras.saving.register_keras_serializable(package="heads")
class Lowest(keras.layers.Layer):
    def call(self, p):
        return keras.ops.argmin(p, axis=-1, keepdims=True)
'''


@pytest.mark.slow
def test_a_model_answering_with_its_class_id_converts_by_tf2onnx_and_to_tflite(tmp_path):
    from modelkit._backend import import_keras

    heads = write_module(tmp_path, "heads", HEADS)
    keras = import_keras("tensorflow")
    keras.utils.set_random_seed(0)
    x = keras.Input((6,), name="x")
    p = keras.layers.Dense(4, activation="softmax", name="probs")(keras.layers.Dense(8, activation="relu")(x))
    keras.Model(x, {"probs": p, "label": heads.Label(name="label")(p), "lowest": heads.Lowest(name="lowest")(p)}
                ).save(tmp_path / "m.keras")
    onnx, tflite = modelkit.convert(tmp_path / "m.keras", "onnx,tflite", out_dir=tmp_path / "out",
                                    imports=[str(tmp_path / "heads.py")], options={"route": "tf2onnx,converter"})
    assert onnx.route["taken"] == "tf2onnx" and onnx.parity["ok"] and tflite.parity["ok"]
    feed = np.random.default_rng(0).standard_normal((32, 6)).astype(np.float32)
    for r in (onnx, tflite):
        out = modelkit.load(r.path).predict({"x": feed})
        assert out["label"].dtype == np.int32 and out["label"].shape == (32,)
        assert (out["label"] == out["probs"].argmax(1)).all() and (out["lowest"][:, 0] == out["probs"].argmin(1)).all()
