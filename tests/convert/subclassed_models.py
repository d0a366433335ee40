"""Registered subclassed Keras models (and a custom layer) for the conversion tests: each is built by
calling it on data, fitted briefly and saved, as users do. Name this file in MODELKIT_IMPORTS so every
converting process can rebuild the classes; `save` runs under any backend (tests call it in a child)."""
from __future__ import annotations

from typing import Any

import keras
import numpy as np

PACKAGE = "modelkit_tests"


@keras.saving.register_keras_serializable(package=PACKAGE)
class GatedDense(keras.layers.Layer):
    """A custom layer with its own weights: units * sigmoid(gate) elementwise."""

    def __init__(self, units: int, **kwargs: Any):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape: Any) -> None:
        self.kernel = self.add_weight(shape=(input_shape[-1], 2 * self.units), initializer="glorot_uniform")
        self.bias = self.add_weight(shape=(2 * self.units,), initializer="zeros")

    def call(self, x: Any) -> Any:
        h = keras.ops.matmul(x, self.kernel) + self.bias
        value, gate = h[..., : self.units], h[..., self.units:]
        return value * keras.ops.sigmoid(gate)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package=PACKAGE)
class Classifier(keras.Model):
    """One input: call(x) -> softmax probabilities."""

    def __init__(self, classes: int = 4, **kwargs: Any):
        super().__init__(**kwargs)
        self.classes = classes
        self.hidden = keras.layers.Dense(16, activation="relu")
        self.out = keras.layers.Dense(classes, activation="softmax")

    def call(self, x: Any) -> Any:
        return self.out(self.hidden(x))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "classes": self.classes}


@keras.saving.register_keras_serializable(package=PACKAGE)
class TwoTower(keras.Model):
    """Two inputs in a dict: call({'left': ..., 'right': ...}) -> one regression output."""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.left = keras.layers.Dense(8, activation="tanh")
        self.right = keras.layers.Dense(8, activation="tanh")
        self.head = keras.layers.Dense(2)

    def call(self, inputs: Any) -> Any:
        return self.head(keras.ops.concatenate([self.left(inputs["left"]), self.right(inputs["right"])], axis=-1))


@keras.saving.register_keras_serializable(package=PACKAGE)
class PairScorer(keras.Model):
    """Two inputs in a list: call([a, b]) -> [score, embedding] (two outputs)."""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.embed = keras.layers.Dense(6, activation="relu")
        self.score = keras.layers.Dense(1)

    def call(self, inputs: Any) -> Any:
        a, b = inputs
        e = self.embed(a) * self.embed(b)
        return [self.score(e), e]


@keras.saving.register_keras_serializable(package=PACKAGE)
class ConvGated(keras.Model):
    """An image model with the custom GatedDense layer inside."""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(4, 3, activation="relu")
        self.pool = keras.layers.GlobalAveragePooling2D()
        self.gated = GatedDense(5)
        self.out = keras.layers.Dense(3)

    def call(self, x: Any) -> Any:
        return self.out(self.gated(self.pool(self.conv(x))))


def _data(kind: str, n: int, rng: np.random.Generator) -> tuple[Any, Any]:
    f = lambda *s: rng.standard_normal((n, *s)).astype("float32")  # noqa: E731
    if kind == "classifier":
        return f(8), keras.utils.to_categorical(rng.integers(0, 4, n), 4)
    if kind == "two_tower":
        return {"left": f(5), "right": f(3)}, f(2)
    if kind == "pair":
        return [f(4), f(4)], [f(1), f(6)]
    if kind == "conv_gated":
        return f(10, 10, 2), f(3)
    raise ValueError(kind)


MODELS = {"classifier": Classifier, "two_tower": TwoTower, "pair": PairScorer, "conv_gated": ConvGated}


def save(kind: str, out: str, seed: int = 0) -> dict[str, Any]:
    """Build `kind` by calling it on data, fit it for 2 epochs, save it to `out`; the backend it ran under."""
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    x, y = _data(kind, 64, rng)
    model = MODELS[kind]()
    model(keras.tree.map_structure(lambda a: a[:4], x))  # built by calling it, as users do
    model.compile(optimizer="adam", loss="mse" if kind != "classifier" else "categorical_crossentropy")
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    model.save(out)
    return {"backend": keras.backend.backend(), "path": out}
