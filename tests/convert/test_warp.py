"""nc81: a spatial transformer (a localisation net predicts an affine transform per image, `ops.image.affine_transform`
warps the image, a CNN classifies it; trained under TensorFlow on digits).

Found converting it with `--to all`: only SavedModel was written. tf2onnx had no op for ImageProjectiveTransformV3,
TFLite no builtin, and Keras' torch code warps image by image in a Python loop over the batch ("Constraints violated
(batch)" in torch.export, a batch baked into the TorchScript trace). The warp is now traced as gathers for every
exporter (modelkit.converters._warp)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import modelkit
from tests.helpers.user_code import keras_beside

WARP = '''import keras
from keras import ops


@keras.saving.register_keras_serializable(package="warp")
class Warp(keras.layers.Layer):
    """Warps `image` by `theta`: 6 affine or 8 projective parameters per image."""
    def __init__(self, interpolation="bilinear", fill_value=0.0, **kwargs):
        super().__init__(**kwargs)
        self.interpolation, self.fill_value = interpolation, fill_value

    def call(self, inputs):
        image, theta = inputs
        if theta.shape[-1] == 6:
            theta = ops.concatenate([theta, ops.zeros_like(theta[:, :2])], axis=-1)
        return ops.image.affine_transform(image, theta, interpolation=self.interpolation,
                                          fill_value=self.fill_value)

    def get_config(self):
        return {**super().get_config(), "interpolation": self.interpolation, "fill_value": self.fill_value}
'''


def _model(tmp_path, n_params: int):
    """Two warps of one image by one transform: bilinear, and nearest with a fill of 0.5."""
    warp, keras = keras_beside(tmp_path, "warp", WARP)
    image, theta = keras.Input((10, 12, 2), name="image"), keras.Input((n_params,), name="theta")
    smooth = warp.Warp(name="bilinear")([image, theta])
    blocky = warp.Warp(interpolation="nearest", fill_value=0.5, name="nearest")([image, theta])
    keras.Model([image, theta], {"bilinear": smooth, "nearest": blocky}).save(tmp_path / "warp.keras")
    return tmp_path / "warp.keras", [str(tmp_path / "warp.py")]


def _samples(batch: int, n_params: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Rotations, scalings and shifts that move part of the image out of the frame (and, with 8 parameters, a
    little perspective); the first transform shifts by half a pixel, where nearest sampling rounds a tie."""
    rng = np.random.default_rng(seed)
    angle, scale = rng.uniform(-0.6, 0.6, batch), rng.uniform(0.7, 1.4, batch)
    theta = np.zeros((batch, n_params), np.float32)
    theta[:, 0], theta[:, 1] = scale * np.cos(angle), -scale * np.sin(angle)
    theta[:, 3], theta[:, 4] = scale * np.sin(angle), scale * np.cos(angle)
    theta[:, 2], theta[:, 5] = rng.uniform(-4, 4, batch), rng.uniform(-4, 4, batch)
    if n_params == 8:
        theta[:, 6:] = rng.uniform(-0.03, 0.03, (batch, 2))
    theta[0] = 0.0
    theta[0, [0, 2, 4, 5]] = 1.0, 0.5, 1.0, -1.5
    image = rng.normal(size=(batch, 10, 12, 2)).astype(np.float32)
    return {"image": image, "theta": theta}


def test_the_gathered_warp_is_tensorflows_own(tmp_path):
    """Projective transforms, both interpolations, a fill value, one image without a batch, channels first."""
    import tensorflow as tf
    from keras.src.backend.tensorflow import image as tf_image

    from modelkit.converters._warp import gathered_affine_transform

    warp = gathered_affine_transform(tf_image.affine_transform, torch_like=False)
    data = _samples(6, 8, seed=1)
    image, theta = tf.constant(data["image"]), tf.constant(data["theta"])
    for kw in ({}, {"interpolation": "nearest"}, {"fill_value": 0.7}, {"interpolation": "nearest", "fill_value": -2}):
        want = tf_image.affine_transform(image, theta, **kw).numpy()
        np.testing.assert_allclose(warp(image, theta, **kw).numpy(), want, atol=1e-5, err_msg=str(kw))
    first = tf_image.affine_transform(image[0], theta[0]).numpy()
    np.testing.assert_allclose(warp(image[0], theta[0]).numpy(), first, atol=1e-5)
    cf = tf.transpose(image, (0, 3, 1, 2))
    want = tf_image.affine_transform(cf, theta, data_format="channels_first").numpy()
    np.testing.assert_allclose(warp(cf, theta, data_format="channels_first").numpy(), want, atol=1e-5)
    # a fill mode it does not write goes to Keras' own code (unchanged)
    want = tf_image.affine_transform(image, theta, fill_mode="reflect").numpy()
    np.testing.assert_array_equal(warp(image, theta, fill_mode="reflect").numpy(), want)


@pytest.mark.slow
def test_a_projective_warp_converts_to_onnx_and_tflite(tmp_path):
    src, imports = _model(tmp_path, 8)
    results = modelkit.convert(src, "onnx,tflite", out_dir=tmp_path / "out", imports=imports)
    assert [r.route["taken"] for r in results] == ["tf2onnx", "converter"]
    data = _samples(5, 8)
    want = modelkit.load(src, imports=imports).predict(data)
    filled = (want["nearest"] == 0.5).mean()
    assert 0.05 < filled < 0.5, filled  # part of every image moved out of the frame
    for r in results:
        got = modelkit.load(r.path).predict(data)
        for name in ("bilinear", "nearest"):
            np.testing.assert_allclose(got[name], want[name], atol=1e-4, err_msg=f"{r.format} {name}")


@pytest.mark.slow
def test_an_affine_warp_keeps_an_open_batch_in_pt2_and_torchscript(tmp_path):
    """Keras' torch code warped image by image in a loop over the batch, fixing it in both traces."""
    src, imports = _model(tmp_path, 6)
    results = modelkit.convert(src, "pt2,torchscript", out_dir=tmp_path / "out", imports=imports)
    source = modelkit.load(src, imports=imports)  # TensorFlow's warp: the same numbers for an affine transform
    for r in results:
        artifact = modelkit.load(r.path)
        for batch in (1, 3, 7):
            data = _samples(batch, 6, seed=batch)
            data["theta"][0, [2, 5]] += 0.01  # off the half pixel, where torch's nearest rounds to even, TF's away
            got, want = artifact.predict(data), source.predict(data)
            for name in ("bilinear", "nearest"):
                assert got[name].shape == (batch, 10, 12, 2)
                np.testing.assert_allclose(got[name], want[name], atol=1e-4, err_msg=f"{r.format} {batch} {name}")


@pytest.mark.slow
def test_an_affine_warp_runs_in_executorch_at_every_batch(tmp_path):
    pytest.importorskip("executorch")
    src, imports = _model(tmp_path, 6)
    (result,) = modelkit.convert(src, "executorch", out_dir=tmp_path / "out", imports=imports)
    source, program = modelkit.load(src, imports=imports), modelkit.load(result.path)
    for batch in (1, 3, 8):
        data = _samples(batch, 6, seed=batch)
        data["theta"][0, [2, 5]] += 0.01
        got, want = program.predict(data), source.predict(data)
        for name in ("bilinear", "nearest"):
            np.testing.assert_allclose(got[name], want[name], atol=1e-4, err_msg=f"batch {batch} {name}")


@pytest.mark.slow
def test_int8_onnx_keeps_the_sampling_coordinates_in_float(tmp_path):
    """The index arithmetic stays float (float_islands._index_arithmetic): quantized, a coordinate of 25 pixels
    had int8 steps of a fifth of a pixel and each read landed on a neighbour (nc81: top-1 0.84 -> 0.21)."""
    import onnxruntime as ort

    from modelkit.converters.float_islands import onnx_kept_float
    from modelkit.converters.quantize import quantize_onnx

    src, imports = _model(tmp_path, 6)
    (result,) = modelkit.convert(src, "onnx", out_dir=tmp_path / "out", imports=imports)
    kept = onnx_kept_float(str(result.path))
    assert any("Cast" in k for k in kept) and any("Floor" in k for k in kept), kept
    quantize_onnx(Path(result.path), tmp_path / "warp.int8.onnx", "int8", _samples(64, 6, seed=5))
    data = _samples(16, 6, seed=6)
    outs = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(["nearest", "bilinear"], data)
            for p in (result.path, tmp_path / "warp.int8.onnx")]
    for exact, int8 in zip(*outs):
        # what int8 activations cost (a step of ~0.03 on values of about N(0, 1)); a misread pixel costs ~1
        assert np.abs(int8 - exact).mean() < 0.05, np.abs(int8 - exact).mean()
