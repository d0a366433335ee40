"""nc172, a PointNet classifier of point clouds of any size (Keras' example: T-Nets whose Dense carries an orthogonal
activity regularizer, a custom class registered in the training script).

- Keras computes an activity regularizer on every call, inference too, and divides it by the batch read as a number
  (`ops.cast(ops.shape(x)[0])`): a torch export fixed the batch there ("layer 'reshape' (Reshape) turns the batch
  into the traced size" with the length fixed; with it open, an ExecuTorch program planned for a batch of 3 failed
  at run time, "resize a bounded tensor with a maximum capacity of 1152 elements to 24576"). A model loaded to
  convert or to predict has its activity regularizers off (keras_io.files).
- The regularizer's class, unregistered in the converting process, gave Keras' "Cannot deserialize object of type"
  with no word of --import; it is named like an unregistered layer.
"""
from __future__ import annotations

import numpy as np
import pytest

import modelkit
from modelkit._backend import import_keras
from modelkit.errors import LoadError
from tests.helpers.user_code import write_module

ORTHOGONAL = '''import keras


@keras.saving.register_keras_serializable("nc172")
class Orthogonal(keras.regularizers.Regularizer):
    """PointNet's: how far a batch of 3 x 3 transforms is from orthogonal (the whole batch times itself)."""

    def __call__(self, x):
        x = keras.ops.reshape(x, (-1, 3, 3))
        xxt = keras.ops.reshape(keras.ops.tensordot(x, x, axes=(2, 2)), (-1, 3, 3))
        return keras.ops.sum(0.001 * keras.ops.square(xxt - keras.ops.eye(3)))

    def get_config(self):
        return {}
'''


def _regularized(keras, regularizer):
    keras.utils.set_random_seed(0)
    layers = keras.layers
    points = keras.Input((None, 3), name="points")
    h = layers.GlobalMaxPooling1D()(layers.Conv1D(8, 1, activation="relu")(points))
    transform = layers.Reshape((3, 3))(layers.Dense(9, activity_regularizer=regularizer)(h))
    turned = layers.Dot(axes=(2, 1))([points, transform])  # the T-Net's transform of every point
    h = layers.GlobalMaxPooling1D()(layers.Conv1D(8, 1, activation="relu")(turned))
    return keras.Model(points, layers.Dense(3, activation="softmax", name="shape")(h))


@pytest.mark.slow
def test_an_activity_regularized_model_converts_to_executorch_with_its_batch_and_length_open(tmp_path):
    keras = import_keras("tensorflow")
    user = write_module(tmp_path, "pointnet_parts", ORTHOGONAL)
    _regularized(keras, user.Orthogonal()).save(tmp_path / "pointnet.keras")
    (r,) = modelkit.convert(tmp_path / "pointnet.keras", "executorch", out_dir=tmp_path, verbose=False,
                            imports=[str(tmp_path / "pointnet_parts.py")])
    assert r.parity["ok"] and r.max_abs < 1e-4
    program, reference = modelkit.load(r.path), modelkit.load(tmp_path / "pointnet.keras")
    for batch, count in ((64, 128), (5, 17)):  # the largest sizes planned, and sizes no check used
        x = np.random.default_rng(batch).normal(size=(batch, count, 3)).astype(np.float32)
        np.testing.assert_allclose(program.predict(x)["shape"], reference.predict(x)["shape"], atol=1e-5)


def test_a_custom_regularizer_no_module_registers_is_named_with_the_flag(tmp_path):
    keras = import_keras("tensorflow")

    @keras.saving.register_keras_serializable("pointnet")
    class Sparse(keras.regularizers.Regularizer):
        def __call__(self, x):
            return keras.ops.sum(keras.ops.abs(x))

        def get_config(self):
            return {}

    Sparse.__module__ = "__main__"  # defined in the training script, as nc172's was: Keras saves no module
    _regularized(keras, Sparse()).save(tmp_path / "pointnet.keras")
    keras.saving.get_custom_objects().pop("pointnet>Sparse")  # a process that did not import it
    with pytest.raises(LoadError) as info:
        modelkit.load(tmp_path / "pointnet.keras")
    assert ("it uses the custom class 'Sparse' (registered as 'pointnet>Sparse'), defined in the script that "
            "saved the model (move it to a module of its own), which no imported module registers: pass --import with "
            "the module or .py file that defines it") in str(info.value)
