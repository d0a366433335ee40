"""nc157: a colour-feature layer a newcomer writes with keras.ops.image (`rgb_to_hsv`, `hsv_to_rgb`,
`rgb_to_grayscale`, `gaussian_blur`) behind a Pipeline of augmentation layers, saved under torch.

Found converting it with `--to all` (under TensorFlow and torch alike): only saved_model and torchscript were
written. tf2onnx wrote an invalid graph ("No Op registered for HSVToRGB") and TFLite has no HSVToRGB builtin; the
TF edges now trace it in the arithmetic of TensorFlow's kernel (modelkit.converters._tf_lowering). torch.export
failed on Keras' torch gaussian_blur, which sizes its kernel from a tensor (GuardOnDataDependentSymNode), so pt2,
ExecuTorch and the torch route to ONNX failed; the export computes it from the sizes as given
(modelkit.converters._torch_blur).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

import modelkit
from modelkit import _child
from tests.helpers.user_code import keras_beside

COLOUR = '''import keras
from keras import ops


@keras.saving.register_keras_serializable(package="colour")
class HueFeatures(keras.layers.Layer):
    def call(self, x):
        hsv = ops.image.rgb_to_hsv(x)
        blurred = ops.image.gaussian_blur(ops.image.rgb_to_grayscale(x), kernel_size=(5, 5), sigma=(1.0, 0.7),
                                          data_format="channels_last")
        return ops.concatenate([hsv, blurred, ops.image.hsv_to_rgb(hsv * 0.9) - x], axis=-1)
'''


def save(folder: str) -> str:
    """image (24x20 RGB in 0..255) -> Pipeline(Rescaling, RandomGrayscale, RandomColorJitter) -> HueFeatures ->
    Conv2D -> GlobalMaxPooling2D -> Dense softmax, saved under torch."""
    colour, keras = keras_beside(Path(folder), "colour", COLOUR, "torch")
    layers = keras.layers
    x = keras.Input((24, 20, 3), name="image")
    h = layers.Pipeline([layers.Rescaling(1 / 255.0), layers.RandomGrayscale(factor=0.5),
                         layers.RandomColorJitter(value_range=(0, 1), brightness_factor=0.2)])(x)
    h = layers.GlobalMaxPooling2D()(layers.Conv2D(8, 3, activation="relu")(colour.HueFeatures()(h)))
    model = keras.Model(x, layers.Dense(4, activation="softmax", name="probs")(h))
    path = Path(folder) / "colour.keras"
    model.save(path)
    return str(path)


def test_a_colour_layer_with_hsv_to_rgb_and_a_blur_converts_to_onnx_tflite_and_pt2(tmp_path):
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


def _images(folder: Path) -> str:
    """Samples in the model's input range (0..255): the hue and saturation vary across them."""
    path = folder / "images.npz"
    np.savez(path, x=np.random.default_rng(0).uniform(0, 255, (16, 24, 20, 3)).astype(np.float32))
    return str(path)
