"""nc144: a PyTorch user's channels-first CNN (images as N, C, H, W), trained under torch, to the formats made under
TensorFlow.

Found converting it with `--to all`: SavedModel and TFLite were refused and the ONNX file came from the torch route.
TensorFlow's CPU convolutions take channels-last only, so Keras' own Conv2D raised UnimplementedError under the TF
backend; and Keras' TF `add` of a layer's bias to a channels-first map whose width equals its channels added the bias
along the width, silently (a SeparableConv2D of 32 filters on maps 32 wide answered 0.16 off). modelkit.keras_io.
channels_first mends both while Keras runs such a model under TensorFlow.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import modelkit
from modelkit import _child
from modelkit.formats import manifest_path

SIDE = 64  # one of parity's sizes: the maps after pooling are 32 wide, as many as the filters after them


def save(path: str) -> dict:
    """The model saved under torch, and its answers there (the truth: Keras' torch backend has neither fault)."""
    import keras

    keras.utils.set_random_seed(0)
    cf = {"data_format": "channels_first"}
    image = keras.Input((1, None, None), name="image")
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", **cf)(image)
    h = keras.layers.BatchNormalization(axis=1)(h)
    h = keras.layers.MaxPooling2D(2, **cf)(h)
    h = keras.layers.SeparableConv2D(SIDE // 2, 3, padding="same", activation="relu", **cf)(h)  # 32 filters, 32 wide
    h = keras.layers.Conv2DTranspose(4, 2, strides=2, **cf)(h)
    h = keras.layers.Conv2D(SIDE, 1, **cf)(h)  # 64 filters on maps 64 wide
    h = keras.layers.GlobalAveragePooling2D(**cf)(h)
    model = keras.Model(image, keras.layers.Dense(3, name="scores")(h))
    rng = np.random.default_rng(0)
    for weight in model.weights:  # biases as training leaves them, not zeros (a misplaced zero bias adds nothing)
        if weight.path.endswith("bias"):
            weight.assign(rng.normal(size=weight.shape).astype(np.float32))
    model.save(path)
    probe = np.random.default_rng(1).random((4, 1, 13, SIDE)).astype(np.float32)
    return {"probe": probe.tolist(), "scores": keras.ops.convert_to_numpy(model(probe)).tolist()}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    path = tmp_path_factory.mktemp("channels_first") / "nchw_torch.keras"
    truth = _child.run("tests.convert.test_channels_first:save", {"path": str(path)}, backend="torch", quiet=True)
    return path, np.asarray(truth["probe"], np.float32), np.asarray(truth["scores"], np.float32)


@pytest.mark.slow
def test_a_channels_first_cnn_reaches_the_tensorflow_formats_and_answers_as_under_torch(source, tmp_path):
    path, probe, truth = source
    results = modelkit.convert(str(path), "saved_model,tflite,onnx", out_dir=tmp_path)
    assert sorted(r.format for r in results) == ["onnx", "saved_model", "tflite"]
    onnx = next(r for r in results if r.format == "onnx")
    assert json.loads(manifest_path(Path(onnx.path)).read_text())["extra"]["route"]["taken"] == "tf2onnx"
    for r in results:
        assert r.parity["ok"], r.format
        np.testing.assert_allclose(modelkit.load(r.path).predict(probe)["scores"], truth, atol=1e-4, err_msg=r.format)
    # Keras itself under TensorFlow, as modelkit loads it
    np.testing.assert_allclose(modelkit.load(str(path)).predict(probe)["scores"], truth, atol=1e-4)


def test_a_bias_over_channels_is_added_along_the_channels_when_the_width_equals_them():
    import keras

    from modelkit.keras_io import channels_first

    channels_first.install()
    rng = np.random.default_rng(0)
    x, bias = rng.normal(size=(2, 5, 3, 5)).astype(np.float32), rng.normal(size=(1, 5, 1, 1)).astype(np.float32)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(keras.ops.add(x, bias)), x + bias)
    last = rng.normal(size=(5,)).astype(np.float32)  # a channels-last bias keeps Keras' own BiasAdd
    np.testing.assert_allclose(keras.ops.convert_to_numpy(keras.ops.add(x, last)), x + last, rtol=1e-6)
