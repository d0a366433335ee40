"""nc181, a GAN discriminator used as a real/fake scorer: a minibatch-std feature (the std over the batch, averaged
to one scalar and broadcast into the feature map) between convolutions. Its int8 ExecuTorch lowering failed inside
XNNPACK ("An error occurred when running the 'ChannelsLastTaggedReshapePass' pass", from "IndexError: invalid index
of a 0-dim tensor"): the pass indexes the first row of a dequantized input computed outside the partition, and the
scalar has none. Such scalars now stay on ExecuTorch's portable kernels (_executorch_dims._xnnpack_can_take)."""
from __future__ import annotations

import numpy as np
import pytest

import modelkit
from tests.helpers.user_code import keras_beside

pytest.importorskip("executorch")

MINIBATCH_STD = '''import keras
from keras import ops


@keras.saving.register_keras_serializable("nc181")
class MinibatchStd(keras.layers.Layer):
    def call(self, x):
        mean = ops.mean(ops.sqrt(ops.var(x, axis=0) + 1e-8))
        ones = ops.ones((ops.shape(x)[0], ops.shape(x)[1], ops.shape(x)[2], 1), dtype=x.dtype)
        return ops.concatenate([x, ones * mean], axis=-1)
'''


@pytest.mark.slow
def test_int8_lowers_a_scalar_computed_over_the_batch(tmp_path):
    user, keras = keras_beside(tmp_path, "gan_parts", MINIBATCH_STD)
    layers = keras.layers
    image = keras.Input((8, 8, 1), name="image")
    h = layers.LeakyReLU(0.2)(layers.Conv2D(8, 3, padding="same")(image))
    h = layers.Conv2D(8, 3, strides=2, padding="same")(user.MinibatchStd()(h))
    model = keras.Model(image, layers.Dense(2, activation="softmax", name="real")(layers.GlobalAveragePooling2D()(h)))
    model.save(tmp_path / "disc.keras")
    x = np.random.default_rng(0).random((64, 8, 8, 1), dtype=np.float32)
    np.savez(tmp_path / "calib.npz", image=x[:32])
    np.savez(tmp_path / "eval.npz", image=x[32:], y=np.argmax(model.predict(x[32:], verbose=0), -1))
    (r,) = modelkit.convert(tmp_path / "disc.keras", "executorch", out_dir=tmp_path, quantize="int8",
                            calibration_data=str(tmp_path / "calib.npz"), eval_data=str(tmp_path / "eval.npz"),
                            max_accuracy_drop=1.0, imports=[str(tmp_path / "gan_parts.py")], verbose=False)
    assert r.path.endswith("disc.int8.pte") and r.accuracy["ok"]
    got = modelkit.load(r.path).predict({"image": x[32:]})["real"]
    assert np.abs(got - model.predict(x[32:], verbose=0)).max() < 0.1  # int8 of a random network, not garbage
