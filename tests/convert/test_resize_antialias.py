"""nc158: resizes TensorFlow runs as ScaleAndTranslate / ResizeArea (an antialiased `Resizing`, the lanczos and area
methods), in front of a small vision transformer a newcomer built from Keras' ViT example.

Found converting it with `--to all`: tf2onnx wrote an invalid graph ("No Op registered for ScaleAndTranslate"),
TFLite has no builtin for it, and the torch route's ONNX (an antialiased Resize) ran differently in OpenVINO and
TVM (off by 1.0 on the logits, caught by their checks). The TF edges now trace these resizes of an image of known
size as two matrix products whose matrices TensorFlow's own resize computes (modelkit.converters._tf_resize).
ExecuTorch cannot run Keras' torch antialiased resize (bicubic: not a Core ATen op; bilinear: its kernel failed at the
first run, error 0x12): refused before any work, naming the layer.
"""
from __future__ import annotations

import numpy as np
import pytest

import modelkit
from modelkit._backend import import_keras
from modelkit.errors import UnsupportedConversionError


@pytest.mark.slow
def test_antialiased_and_area_resizes_convert_by_tf2onnx_and_to_tflite_and_openvino(tmp_path):
    keras = import_keras("tensorflow")
    keras.utils.set_random_seed(0)
    layers = keras.layers
    x = keras.Input((30, 28, 3), name="photo")
    small = layers.Resizing(20, 16, interpolation="bicubic", antialias=True, name="small")(x)  # down, antialiased
    big = layers.Resizing(40, 36, interpolation="area")(x)  # ResizeArea
    lanczos = layers.Resizing(20, 16, interpolation="lanczos3")(big)  # ScaleAndTranslate without antialias
    h = layers.Concatenate()([small, lanczos])
    h = layers.GlobalAveragePooling2D()(layers.Conv2D(6, 3, activation="tanh")(h))
    keras.Model(x, layers.Dense(5, name="logits")(h)).save(tmp_path / "resize.keras")

    results = modelkit.convert(tmp_path / "resize.keras", to="onnx,tflite,openvino", out_dir=tmp_path / "out")
    by = {r.format: r for r in results}
    assert by["onnx"].route["taken"] == "tf2onnx" and not by["onnx"].route.get("tried")
    for r in results:
        assert r.max_abs < 1e-4 and r.parity["outputs"][0]["spread"] > 1e-3, (r.format, r.parity["outputs"])
    feed = np.random.default_rng(5).uniform(0, 1, (3, 30, 28, 3)).astype(np.float32)
    want = keras.models.load_model(tmp_path / "resize.keras")(feed).numpy()
    for r in results:
        np.testing.assert_allclose(modelkit.load(r.path).predict(feed)["logits"], want, atol=1e-5)
    with pytest.raises(UnsupportedConversionError) as info:  # read from the config: nothing runs
        modelkit.convert(tmp_path / "resize.keras", to="executorch", out_dir=tmp_path / "out")
    # named: a layer's default name depends on the layers made before it in the process (resizing_2 under xdist)
    assert "layer 'small' (Resizing) cannot be converted to executorch: it resizes with antialias=True" in \
        str(info.value)
