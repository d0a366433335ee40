"""nc157: a colour-feature layer a newcomer writes with keras.ops.image (`rgb_to_hsv`, `hsv_to_rgb`,
`rgb_to_grayscale`, `gaussian_blur`) behind a Pipeline of augmentation layers, saved under torch.

Found converting it with `--to all` (under TensorFlow and torch alike): only saved_model and torchscript were
written. tf2onnx wrote an invalid graph ("No Op registered for HSVToRGB") and TFLite has no HSVToRGB builtin; the
TF edges now trace it in the arithmetic of TensorFlow's kernel (modelkit.converters._tf_lowering). torch.export
failed on Keras' torch gaussian_blur, which sizes its kernel from a tensor (GuardOnDataDependentSymNode), so pt2,
ExecuTorch and the torch route to ONNX failed; the export computes it from the sizes as given
(modelkit.converters._torch_blur).

Then: Keras' torch gaussian_blur called without data_format blurs a channels-last image as channels-first, so the
artifacts made under TensorFlow and under torch disagreed (0.031 on a softmax) while each passed its check against
its own backend's Keras: a conversion now warns when the backends' Keras disagree on a probe batch
(modelkit.converters.backend_agreement). The Rescaling inside the Pipeline now sets the verification inputs' range
(they were uniform [0, 1), where the disagreement hid below 2e-4).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import modelkit
from modelkit import _child, manifest
from tests.helpers.user_code import keras_beside

COLOUR = '''import keras
from keras import ops


@keras.saving.register_keras_serializable(package="colour")
class HueFeatures(keras.layers.Layer):
    def __init__(self, data_format="channels_last", **kwargs):
        super().__init__(**kwargs)
        self.data_format = data_format

    def get_config(self):
        return {**super().get_config(), "data_format": self.data_format}

    def call(self, x):
        hsv = ops.image.rgb_to_hsv(x)
        blurred = ops.image.gaussian_blur(ops.image.rgb_to_grayscale(x), kernel_size=(5, 5), sigma=(1.0, 0.7),
                                          data_format=self.data_format)
        return ops.concatenate([hsv, blurred, ops.image.hsv_to_rgb(hsv * 0.9) - x], axis=-1)
'''


def save(folder: str, data_format: str | None = "channels_last") -> str:
    """image (24x20 RGB in 0..255) -> Pipeline(Rescaling, RandomGrayscale, RandomColorJitter) -> HueFeatures ->
    Conv2D -> GlobalMaxPooling2D -> Dense softmax, saved under torch (the blur's data_format as given)."""
    colour, keras = keras_beside(Path(folder), "colour", COLOUR, "torch")
    layers = keras.layers
    x = keras.Input((24, 20, 3), name="image")
    h = layers.Pipeline([layers.Rescaling(1 / 255.0), layers.RandomGrayscale(factor=0.5),
                         layers.RandomColorJitter(value_range=(0, 1), brightness_factor=0.2)])(x)
    h = layers.GlobalMaxPooling2D()(layers.Conv2D(8, 3, activation="relu")(colour.HueFeatures(data_format)(h)))
    model = keras.Model(x, layers.Dense(4, activation="softmax", name="probs")(h))
    path = Path(folder) / "colour.keras"
    model.save(path)
    return str(path)


@pytest.mark.slow
def test_a_colour_layer_with_hsv_to_rgb_and_a_blur_converts_to_onnx_tflite_and_pt2(tmp_path, capsys):
    src = _child.run("tests.convert.test_colour_ops:save", {"folder": str(tmp_path)}, backend="torch", quiet=True)
    results = modelkit.convert(src, to="onnx,tflite,pt2", out_dir=tmp_path / "out", data=_images(tmp_path),
                               imports=[str(tmp_path / "colour.py")])
    by = {r.format: r for r in results}
    assert by["onnx"].route["taken"] == "tf2onnx" and not by["onnx"].route.get("tried")
    for r in results:
        assert r.max_abs < 1e-4 and r.parity["outputs"][0]["spread"] > 1e-3, (r.format, r.parity["outputs"])
    # the artifacts made under TensorFlow (onnx, tflite) and torch (pt2) agree at batches the checks did not use
    feed = np.random.default_rng(7).uniform(0, 255, (5, 24, 20, 3)).astype(np.float32)
    outs = {r.format: modelkit.load(r.path).predict(feed)["probs"] for r in results}
    np.testing.assert_allclose(outs["onnx"], outs["pt2"], atol=1e-5)
    np.testing.assert_allclose(outs["tflite"], outs["pt2"], atol=1e-5)
    assert np.ptp(outs["pt2"]) > 0.01
    assert "warning: Keras computes" not in capsys.readouterr().err  # the backends agree: no warning


@pytest.mark.slow
def test_backends_that_compute_the_model_differently_are_warned_about(tmp_path, capsys):
    src = _child.run("tests.convert.test_colour_ops:save", {"folder": str(tmp_path), "data_format": None},
                     backend="torch", quiet=True)
    onnx, script = modelkit.convert(src, to="onnx,torchscript", out_dir=tmp_path / "out",
                                    imports=[str(tmp_path / "colour.py")])
    err = capsys.readouterr().err
    assert "warning: Keras computes colour.keras differently under its tensorflow and torch backends" in err
    assert "(under tensorflow: onnx; under torch: torchscript)" in err
    assert onnx.parity["ok"] and script.parity["ok"]  # each matches its own backend's Keras
    plan = manifest.read(onnx.path).extra["verification_inputs"]
    assert plan["source"] == "inferred" and plan["ranges"]["image"]["high"] == 255.0  # the Pipeline's Rescaling
    feed = np.random.default_rng(3).uniform(0, 255, (4, 24, 20, 3)).astype(np.float32)
    a, b = (modelkit.load(r.path).predict(feed)["probs"] for r in (onnx, script))
    assert np.abs(a - b).max() > 1e-3  # what the warning says: the two artifacts disagree


def _images(folder: Path) -> str:
    """Samples in the model's input range (0..255): the hue and saturation vary across them."""
    path = folder / "images.npz"
    np.savez(path, x=np.random.default_rng(0).uniform(0, 255, (16, 24, 20, 3)).astype(np.float32))
    return str(path)
