"""nc78: feature layers a newcomer writes with keras.ops: a colour layer (`ops.image.rgb_to_grayscale` and
`ops.image.rgb_to_hsv`, in a siamese pair of towers trained under JAX) and a spectral layer (`ops.rfft` of each frame,
its log magnitude, before a ConvLSTM1D, trained under torch).

Found converting both with `--to all`: tf2onnx wrote invalid graphs ("No Op registered for RGBToHSV", "... for
RFFT"; the siamese pair reached ONNX only by the torch route, 247 KB for 53 KB) and TFLite refused RGBToHSV (no
builtin). The TF edges now trace rfft over a known frame length as two matrix products and rgb_to_hsv in the
arithmetic of TensorFlow's kernel (modelkit.converters._tf_lowering)."""
from __future__ import annotations

import numpy as np
import pytest

import modelkit
from tests.helpers.user_code import keras_beside

FEATS = '''import keras
from keras import ops


@keras.saving.register_keras_serializable(package="feats")
class ColorFeatures(keras.layers.Layer):
    def call(self, x):
        x = x / 255.0
        return ops.concatenate([ops.image.rgb_to_grayscale(x), ops.image.rgb_to_hsv(x)], axis=-1)


@keras.saving.register_keras_serializable(package="feats")
class Spectrum(keras.layers.Layer):
    def __init__(self, fft_length=None, **kwargs):
        super().__init__(**kwargs)
        self.fft_length = fft_length

    def call(self, x):
        re, im = ops.rfft(x, fft_length=self.fft_length)
        return ops.log(ops.sqrt(re * re + im * im) + 1e-3)

    def get_config(self):
        return {**super().get_config(), "fft_length": self.fft_length}
'''


def _images(n: int) -> np.ndarray:
    """Random colours, with the cases HSV branches on: greys (no spread, hue 0), black, pure and tied primaries."""
    x = np.random.default_rng(n).uniform(0, 255, (n, 6, 6, 3)).astype(np.float32)
    x[:, 0, 0] = 0.0
    x[:, 0, 1] = 128.0
    x[:, 0, 2] = (255, 0, 0)
    x[:, 0, 3] = (0, 255, 255)
    x[:, 0, 4] = (255, 255, 0)
    x[:, 0, 5] = (10, 200, 10)
    return x


@pytest.mark.slow
def test_a_colour_feature_layer_converts_to_onnx_and_tflite(tmp_path):
    feats, keras = keras_beside(tmp_path, "feats", FEATS)
    x = keras.Input((6, 6, 3), name="image")
    h = keras.layers.Conv2D(4, 3)(feats.ColorFeatures()(x))
    keras.Model(x, keras.layers.Dense(2, name="y")(keras.layers.Flatten()(h))).save(tmp_path / "color.keras")
    imports = [str(tmp_path / "feats.py")]
    results = modelkit.convert(tmp_path / "color.keras", "onnx,tflite", out_dir=tmp_path / "out", imports=imports)
    assert sorted(r.format for r in results) == ["onnx", "tflite"]
    # tf2onnx's route (the torch route's ONNX was 4.7 times larger) and the TFLite converter's
    assert [r.route["taken"] for r in results] == ["tf2onnx", "converter"]
    want = modelkit.load(tmp_path / "color.keras", imports=imports).predict(_images(5))["y"]
    for r in results:
        np.testing.assert_allclose(modelkit.load(r.path).predict(_images(5))["y"], want, atol=1e-4, err_msg=r.format)


@pytest.mark.slow
@pytest.mark.parametrize("fft_length", [None, 24, 40])
def test_a_spectral_layer_converts_to_onnx_at_any_number_of_frames(tmp_path, fft_length):
    feats, keras = keras_beside(tmp_path, "feats", FEATS)
    x = keras.Input((None, 32), name="frames")
    h = feats.Spectrum(fft_length=fft_length)(x)
    keras.Model(x, keras.layers.Dense(3, name="y")(h)).save(tmp_path / "spec.keras")
    imports = [str(tmp_path / "feats.py")]
    (result,) = modelkit.convert(tmp_path / "spec.keras", "onnx", out_dir=tmp_path / "out", imports=imports)
    assert result.route["taken"] == "tf2onnx"  # the torch route's missed parity at fft_length 24
    keras_model, onnx_model = modelkit.load(tmp_path / "spec.keras", imports=imports), modelkit.load(result.path)
    for frames in (1, 9):
        t = np.arange(frames * 32).reshape(1, frames, 32) / 8.0
        signal = np.concatenate([np.sin(t), np.cos(3 * t), np.random.default_rng(frames).normal(size=t.shape)])
        signal = signal.astype(np.float32)
        np.testing.assert_allclose(onnx_model.predict(signal)["y"], keras_model.predict(signal)["y"], atol=1e-3)


@pytest.mark.slow
def test_a_colour_feature_layer_runs_in_executorch_at_every_batch(tmp_path):
    """Keras' torch rgb_to_hsv splits the channels (torch.split); ExecuTorch 1.5.1 ran split_with_sizes only at the
    batch it was traced with ("execute() failed with error 0x10" at any other): the edge writes each part as a
    slice."""
    pytest.importorskip("executorch")
    feats, keras = keras_beside(tmp_path, "feats", FEATS)
    x = keras.Input((6, 6, 3), name="image")
    keras.Model(x, keras.layers.Dense(2, name="y")(feats.ColorFeatures()(x))).save(tmp_path / "hsv.keras")
    imports = [str(tmp_path / "feats.py")]
    (result,) = modelkit.convert(tmp_path / "hsv.keras", "executorch", out_dir=tmp_path / "out", imports=imports)
    keras_model, program = modelkit.load(tmp_path / "hsv.keras", imports=imports), modelkit.load(result.path)
    for batch in (1, 3, 8):
        got, want = program.predict(_images(batch))["y"], keras_model.predict(_images(batch))["y"]
        assert got.shape == (batch, 6, 6, 2)
        np.testing.assert_allclose(got, want, atol=1e-4, err_msg=f"batch {batch}")
