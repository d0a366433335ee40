"""`modelkit verify model.keras artifact`: the .keras reference is computed under the Keras backend of the
conversion that made the artifact (its manifest's first hop), as that hop's parity check computed it. nc183, a
segmenter whose ASPP pooling branch resizes to the feature map's dynamic size: Keras rebuilds it under torch and JAX
but not under TensorFlow ("Using a symbolic `tf.Tensor` as a Python `bool`"), so its torch-made artifacts converted
with parity while `modelkit verify seg.keras seg.torchscript.pt` failed to load the reference."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers import modelkit_script

PARTS = '''import keras
from keras import ops


@keras.saving.register_keras_serializable(package="aspp")
class PoolToSize(keras.layers.Layer):
    def call(self, x):
        pooled = ops.mean(x, axis=(1, 2), keepdims=True)
        return ops.image.resize(pooled, (ops.shape(x)[1], ops.shape(x)[2]), interpolation="bilinear")
'''

MAKE = '''import keras
from parts import PoolToSize

keras.utils.set_random_seed(0)
inp = keras.Input((None, None, 1), name="canvas")
h = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
h = keras.layers.Concatenate()([h, PoolToSize()(h)])
keras.Model(inp, keras.layers.Conv2D(3, 1, activation="softmax", name="mask")(h)).save("seg.keras")
'''


@pytest.mark.slow
def test_verify_loads_the_reference_under_the_backend_that_converted_the_artifact(tmp_path):
    (tmp_path / "parts.py").write_text(PARTS)
    (tmp_path / "make.py").write_text(MAKE)
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    made = subprocess.run([sys.executable, "make.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert made.returncode == 0, made.stderr[-2000:]
    done = modelkit_script("-q", "convert", "seg.keras", "--to", "torchscript", "--import", "parts.py", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    checked = modelkit_script("verify", "seg.keras", "seg.torchscript.pt", "--import", "parts.py", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout[-1000:] + checked.stderr[-2000:]
    assert "parity OK" in checked.stdout
    # with no artifact made under torch to follow, TensorFlow's Keras cannot rebuild it: the error says so
    refused = modelkit_script("verify", "seg.keras", "seg.keras", "--import", "parts.py", cwd=tmp_path)
    assert refused.returncode == 2 and "under the tensorflow backend" in refused.stderr
