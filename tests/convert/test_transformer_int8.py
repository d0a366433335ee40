"""int8 of a small vision transformer (nc67: patches by `ops.image.extract_patches`, a learned position embedding,
two pre-norm blocks of MultiHeadAttention and a GELU MLP, on digits upscaled to 16x16). Its float formats all
converted; TFLite int8 lost 0.066 of top-1 and tf2onnx's ONNX 0.053: both write LayerNormalization out as mean,
squared difference, mean, + epsilon, rsqrt, scale and shift, and one int8 scale per tensor ruined the variance.
Those ops stay float now (float_islands._norm_statistics); the matmuls are int8."""
from __future__ import annotations

import numpy as np
import pytest

import modelkit
from modelkit.converters.float_islands import Op, kept_float
from tests.helpers.user_code import keras_beside

VIT = '''import keras
from keras import ops


@keras.saving.register_keras_serializable(package="vit")
class Patches(keras.layers.Layer):
    def call(self, images):
        p = ops.image.extract_patches(images, 4)
        return ops.reshape(p, (-1, p.shape[1] * p.shape[2], p.shape[-1]))


@keras.saving.register_keras_serializable(package="vit")
class AddPosition(keras.layers.Layer):
    def build(self, shape):
        self.pos = self.add_weight(shape=(1, shape[1], shape[2]), initializer="random_normal", name="pos")

    def call(self, x):
        return x + self.pos
'''


def test_a_layer_normalization_written_out_keeps_its_statistics_float():
    def op(name, kind, *inputs):
        return Op(name, kind, inputs, (name,))

    norm = [op("mean", "mean", "x", "axis"), op("sqd", "squared_difference", "x", "mean"),
            op("var", "mean", "sqd", "axis"), op("eps", "add", "var", "1e-3"), op("root", "rsqrt", "eps"),
            op("scale", "mul", "root", "gamma"), op("xs", "mul", "x", "scale"), op("ms", "mul", "mean", "scale"),
            op("shift", "sub", "beta", "ms"), op("normed", "add", "xs", "shift")]
    rest = [op("fc", "fully_connected", "normed", "w"), op("residual", "add", "x", "fc"),
            op("pool", "mean", "residual", "axis"), op("head", "fully_connected", "pool", "w2")]
    constants = {k: np.ones(4) for k in ("axis", "1e-3", "gamma", "beta", "w", "w2")}
    assert kept_float(norm + rest, constants, ["x"]) == [o.name for o in norm]  # not the residual, the pooling


@pytest.mark.parametrize("fmt", ["tflite"])
def test_int8_of_a_small_vision_transformer_keeps_its_accuracy(fmt, tmp_path, capfd):
    from sklearn.datasets import load_digits

    vit, keras = keras_beside(tmp_path, "vit", VIT)
    digits = load_digits()
    x = np.repeat(np.repeat(digits.images[..., None] / 16.0, 2, 1), 2, 2).astype(np.float32)
    image = keras.Input((16, 16, 1), name="image")
    h = vit.AddPosition()(keras.layers.Dense(32)(vit.Patches()(image)))
    for _ in range(2):
        n = keras.layers.LayerNormalization()(h)
        h = h + keras.layers.MultiHeadAttention(4, 8)(n, n)
        h = h + keras.layers.Dense(32)(keras.layers.Dense(64, activation="gelu")(keras.layers.LayerNormalization()(h)))
    out = keras.layers.Dense(10, activation="softmax", name="digit")(keras.layers.GlobalAveragePooling1D()(h))
    model = keras.Model(image, out)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x[:1400], digits.target[:1400], epochs=8, verbose=0)
    model.save(tmp_path / "vit.keras")
    np.savez(tmp_path / "test.npz", x=x[1400:], y=digits.target[1400:])
    np.savez(tmp_path / "calib.npz", x[:300])
    options = {"quantize": "int8", "calibration_data": str(tmp_path / "calib.npz"),
               "eval_data": str(tmp_path / "test.npz")}
    results = modelkit.convert(tmp_path / "vit.keras", fmt, out_dir=tmp_path / "out",
                               imports=[str(tmp_path / "vit.py")], options=options)
    (r,) = [r for r in results if r.quantization == "int8"]
    assert r.accuracy["source_accuracy"] > 0.6, r.accuracy
    assert r.accuracy["ok"] and r.accuracy["drop"] <= 0.01, r.accuracy
    said = next(ln for ln in capfd.readouterr().err.splitlines() if "kept in float32" in ln)
    assert "layer_normalization" in said and "rsqrt" in said.lower(), said  # the matmuls stay int8
