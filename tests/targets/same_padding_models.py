"""Models with `same` padding and strides over open sizes (tests/targets/test_tvm_same_padding.py), saved in a
child under the backend a user trained on."""
from __future__ import annotations

from typing import Any


def sequence(keras: Any) -> Any:
    """A classifier of series of any length: kernel 9 at stride 4, a `same` max pooling (3 / 2), a `same` average
    pooling (4 / 3, whose count leaves the padding out), a kernel of 2 at stride 3 (shorter than its stride)."""
    L = keras.layers
    x = keras.Input((None, 2), name="series")
    h = L.Conv1D(6, 9, strides=4, padding="same", activation="relu")(x)
    h = L.MaxPooling1D(3, strides=2, padding="same")(h)
    h = L.AveragePooling1D(4, strides=3, padding="same")(h)
    h = L.Conv1D(6, 2, strides=3, padding="same")(h)
    return keras.Model(x, L.Dense(3, name="y")(L.GlobalMaxPooling1D()(h)))


def image(keras: Any) -> Any:
    """A classifier of images of any size: strided `same` Conv2D, DepthwiseConv2D (5 / 2), max and average
    pooling, a strided SeparableConv2D."""
    L = keras.layers
    x = keras.Input((None, None, 3), name="image")
    h = L.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x)
    h = L.DepthwiseConv2D(5, strides=2, padding="same")(h)
    h = L.MaxPooling2D(3, strides=2, padding="same")(h)
    h = L.AveragePooling2D(2, padding="same")(h)
    h = L.SeparableConv2D(8, 3, strides=2, padding="same")(h)
    return keras.Model(x, L.Dense(4, name="y")(L.GlobalMaxPooling2D()(h)))


def mobilenet(keras: Any) -> Any:
    """keras.applications' MobileNetV2 (alpha 0.35, untrained) on images of any size, BatchNorm statistics set
    away from 0 / 1 so that the check is not vacuous."""
    import numpy as np

    base = keras.applications.MobileNetV2(input_shape=(None, None, 3), alpha=0.35, weights=None, include_top=False,
                                          pooling="avg")
    rng = np.random.default_rng(0)
    for layer in base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.1, n).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, n).astype("float32"))
    x = keras.Input((None, None, 3), name="image")
    return keras.Model(x, keras.layers.Dense(5, name="y")(base(x)))


BUILDERS = {"sequence": sequence, "image": image, "mobilenet": mobilenet}


def save(models: dict[str, str]) -> dict[str, str]:
    """In a child: each model in `models` ({builder name: path}) built, seeded, and saved under its backend."""
    from modelkit._backend import import_keras

    keras = import_keras()
    keras.utils.set_random_seed(0)
    for name, path in models.items():
        BUILDERS[name](keras).save(path)
    return {"backend": keras.backend.backend()}
