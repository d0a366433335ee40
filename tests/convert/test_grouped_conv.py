"""Grouped convolutions (Conv2D(groups=g): keras.applications' ConvNeXt writes its depthwise convolutions so)
through tf2onnx. Keras' TensorFlow backend runs them inside tf.function(jit_compile=True), which tf2onnx left
as an opaque StatefulPartitionedCall: the tf2onnx route failed ("No Op registered for StatefulPartitionedCall")
after printing one "Tensorflow op [...] is not supported" line per convolution (18 for ConvNeXtTiny), and the
torch route had to take over. They are traced as depthwise or per-group convolutions now
(modelkit.converters._tf_lowering)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import modelkit


def _model(path: Path) -> Path:
    from modelkit._backend import import_keras

    keras = import_keras("tensorflow")
    keras.utils.set_random_seed(0)
    L = keras.layers
    image = keras.Input((None, None, 8), name="image")
    x = L.Conv2D(8, 7, padding="same", groups=8, name="depthwise_like_convnext")(image)
    x = L.Conv2D(16, 3, strides=2, groups=4, activation="relu", name="grouped")(x)
    x = L.Conv2D(16, 3, padding="same", groups=16, dilation_rate=2, name="dilated_depthwise")(x)
    x = L.GlobalAveragePooling2D()(x)
    series = keras.Input((12, 4), name="series")
    y = L.Conv1D(8, 3, padding="causal", groups=2, name="grouped_1d")(series)
    y = L.GlobalMaxPooling1D()(y)
    keras.Model([image, series], L.Dense(3, activation="softmax", name="probs")(L.Concatenate()([x, y]))).save(path)
    return path


@pytest.mark.slow
def test_grouped_convolutions_convert_by_tf2onnx_quietly_with_parity(tmp_path, capfd):
    src = _model(tmp_path / "grouped.keras")
    (onnx, tflite) = modelkit.convert(src, "onnx,tflite", out_dir=tmp_path / "out",
                                      options={"route": "tf2onnx,converter"})
    assert onnx.route["taken"] == "tf2onnx" and onnx.parity["ok"] and tflite.parity["ok"]
    assert onnx.max_abs < 1e-4 and tflite.max_abs < 1e-4
    assert "is not supported" not in capfd.readouterr().err
    manifest = json.loads(Path(onnx.path + ".modelkit.json").read_text())
    assert any(c["shapes"] for c in manifest["parity"]["cases"])  # open height and width checked at other sizes
    rng = np.random.default_rng(1)
    feed = {"image": rng.random((2, 19, 23, 8), dtype=np.float32), "series": rng.random((2, 12, 4), dtype=np.float32)}
    np.testing.assert_allclose(modelkit.load(onnx.path).predict(feed)["probs"],
                               modelkit.load(tflite.path).predict(feed)["probs"], atol=1e-5)
