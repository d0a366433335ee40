"""Models for the route tests (tests/convert/test_routes.py): recurrent classifiers and taggers as users
build them (LSTM, GRU, SimpleRNN, Bidirectional, stacked, masked by Embedding(mask_zero=True) or Masking),
GELU feed-forward blocks (exact and tanh-approximated, Dense(activation="gelu"), a layer calling erf), a
Discretization front end and a bit-flags decoder (the torch route's ONNX case). Built under any backend (`save`
runs in a child with the backend to save under); `convert_each` runs hops in one child and reports each result or
typed error. Name this module in MODELKIT_IMPORTS: it registers the custom layers. Weights are seeded glorot, so
outputs vary."""
from __future__ import annotations

from typing import Any, Callable

import keras
import numpy as np

PACKAGE = "modelkit_routes"


@keras.saving.register_keras_serializable(package=PACKAGE)
class TanhGelu(keras.layers.Layer):
    """keras.activations.gelu(x, approximate=True): the tanh approximation (BERT's)."""

    def call(self, x: Any) -> Any:
        return keras.activations.gelu(x, approximate=True)


@keras.saving.register_keras_serializable(package=PACKAGE)
class ErfGate(keras.layers.Layer):
    """x * (1 + erf(x / 2)) / 2: a gate written with keras.ops.erf directly."""

    def call(self, x: Any) -> Any:
        return x * (1.0 + keras.ops.erf(x / 2.0)) / 2.0


@keras.saving.register_keras_serializable(package=PACKAGE)
class BitFlags(keras.layers.Layer):
    """A packed int of 4 bit flags unpacked into 4 float features (shift and bitwise and)."""

    def call(self, x: Any) -> Any:
        shifts = keras.ops.arange(4, dtype="int32")[None, :]
        return keras.ops.cast(keras.ops.bitwise_and(keras.ops.right_shift(x, shifts), 1), "float32")


def _lstm(L: Any) -> tuple[Any, Any]:
    """A sequence classifier: LSTM over 12 steps of 6 features, softmax over 4 classes."""
    x = keras.Input((12, 6), name="frames")
    return x, L.Dense(4, activation="softmax", name="probs")(L.LSTM(16)(x))


def _gru(L: Any) -> tuple[Any, Any]:
    """A tagger: GRU (reset_after=False, Keras 2's layout) returning sequences, a Dense per step."""
    x = keras.Input((10, 5), name="frames")
    return x, L.Dense(3, name="per_step")(L.GRU(8, return_sequences=True, reset_after=False)(x))


def _simple_rnn(L: Any) -> tuple[Any, Any]:
    """A SimpleRNN regressor over 9 steps of 4 features."""
    x = keras.Input((9, 4), name="series")
    return x, L.Dense(2, name="forecast")(L.SimpleRNN(8)(x))


def _bilstm(L: Any) -> tuple[Any, Any]:
    """Bidirectional LSTM returning sequences, averaged over time."""
    x = keras.Input((12, 6), name="frames")
    h = L.Bidirectional(L.LSTM(8, return_sequences=True))(x)
    return x, L.Dense(3, name="probs", activation="softmax")(L.GlobalAveragePooling1D()(h))


def _stacked(L: Any) -> tuple[Any, Any]:
    """LSTM -> GRU -> SimpleRNN, the first two returning sequences."""
    x = keras.Input((12, 6), name="frames")
    h = L.LSTM(8, return_sequences=True, name="lstm")(x)
    h = L.GRU(8, return_sequences=True, name="gru")(h)
    return x, L.Dense(3, name="logits")(L.SimpleRNN(6, name="simple_rnn")(h))


def _masked_bilstm(L: Any) -> tuple[Any, Any]:
    """Token ids padded with 0: Embedding(mask_zero=True) -> Bidirectional(LSTM) -> softmax."""
    x = keras.Input((10,), dtype="int32", name="tokens")
    h = L.Embedding(40, 8, mask_zero=True)(x)
    return x, L.Dense(3, activation="softmax", name="probs")(L.Bidirectional(L.LSTM(8), name="bilstm")(h))


def _masking_gru(L: Any) -> tuple[Any, Any]:
    """Frames padded with zero rows: Masking -> GRU returning sequences -> masked average -> score."""
    x = keras.Input((12, 6), name="frames")
    h = L.GRU(8, return_sequences=True, name="gru")(L.Masking(0.0)(x))
    return x, L.Dense(2, name="score")(L.GlobalAveragePooling1D()(h))


def _gru_open(L: Any) -> tuple[Any, Any]:
    """A GRU over sequences of any length (None, 6): unrolling needs a length."""
    x = keras.Input((None, 6), name="frames")
    return x, L.Dense(3, name="probs", activation="softmax")(L.GRU(8, name="gru")(x))


def _masked_open(L: Any) -> tuple[Any, Any]:
    """Padded token ids of any length: Embedding(mask_zero=True) -> Bidirectional(LSTM) returning sequences ->
    a backward GRU -> softmax (a mask, both directions and stacking over an open length)."""
    x = keras.Input((None,), dtype="int32", name="tokens")
    h = L.Embedding(40, 8, mask_zero=True)(x)
    h = L.Bidirectional(L.LSTM(6, return_sequences=True), name="bilstm")(h)
    return x, L.Dense(3, activation="softmax", name="probs")(L.GRU(5, go_backwards=True, name="back_gru")(h))


def _masked_pool(L: Any) -> tuple[Any, Any]:
    """A review classifier: padded ids of any length -> Bidirectional(GRU) returning sequences -> masked mean
    (NaN for a row of padding only, in Keras as in any faithful artifact)."""
    x = keras.Input((None,), dtype="int32", name="tokens")
    h = L.Bidirectional(L.GRU(6, return_sequences=True), name="bigru")(L.Embedding(40, 8, mask_zero=True)(x))
    return x, L.Dense(2, activation="softmax", name="probs")(L.GlobalAveragePooling1D()(h))


def _dead_gru(L: Any) -> tuple[Any, Any]:
    """A GRU under a zero Dense head: its output never changes, so parity proves nothing on any route."""
    x = keras.Input((6, 3), name="frames")
    return x, L.Dense(2, kernel_initializer="zeros", name="out")(L.GRU(4, name="gru")(x))


def _gelu(L: Any) -> tuple[Any, Any]:
    """GELU three ways: Dense(activation="gelu") (exact: erfc under TF), Activation(gelu), the tanh
    approximation (a registered layer)."""
    x = keras.Input((8,), name="features")
    h = L.Dense(16, activation="gelu")(x)
    h = L.Activation(keras.activations.gelu)(L.Dense(16)(h))
    h = TanhGelu()(L.Dense(16)(h))
    return x, L.Dense(3, name="out")(h)


def _erf(L: Any) -> tuple[Any, Any]:
    """A feed-forward block gated with keras.ops.erf directly (a registered layer)."""
    x = keras.Input((8,), name="features")
    return x, L.Dense(3, name="out")(ErfGate(name="erf_gate")(L.Dense(16)(x)))


def _discretize(L: Any) -> tuple[Any, Any]:
    """Bucketed features (Discretization; keras.ops.digitize traced as comparisons and a count) one-hot encoded,
    then Dense."""
    x = keras.Input((4,), name="features")
    h = L.Discretization(bin_boundaries=[0.25, 0.5, 0.75], name="buckets")(x)
    h = L.Flatten()(L.CategoryEncoding(num_tokens=4, output_mode="one_hot")(L.Reshape((4, 1))(h)))
    return x, L.Dense(3, name="out")(L.Concatenate()([h, x]))


def _flags(L: Any) -> tuple[Any, Any]:
    """Features unpacked from bit flags: tf2onnx writes BitwiseAnd at opset 17, where ONNX has none (it came at 18),
    so keras -> onnx takes the torch route."""
    x = keras.Input((1,), dtype="int32", name="packed")
    return x, L.Dense(3, name="out")(BitFlags(name="flags")(x))


BUILDERS: dict[str, Callable[[Any], tuple[Any, Any]]] = {
    "lstm": _lstm, "gru": _gru, "simple_rnn": _simple_rnn, "bilstm": _bilstm, "stacked": _stacked,
    "masked_bilstm": _masked_bilstm, "masking_gru": _masking_gru, "gru_open": _gru_open,
    "masked_open": _masked_open, "masked_pool": _masked_pool, "dead_gru": _dead_gru,
    "gelu": _gelu, "erf": _erf, "discretize": _discretize, "flags": _flags}


def save(kind: str, path: str, seed: int = 0) -> str:
    """Build model `kind` under this process's Keras backend and save it to `path`."""
    keras.utils.set_random_seed(seed)
    x, y = BUILDERS[kind](keras.layers)
    keras.Model(x, y).save(path)
    return path


def save_all(saves: list[dict[str, Any]]) -> list[str]:
    """save(**item) for each item, in this process (one child per backend saves every model)."""
    return [save(**item) for item in saves]


def padded_frames(path: str, rows: int = 16, steps: int = 12, features: int = 6, seed: int = 0) -> str:
    """Samples for the Masking model: frames of random lengths 1..steps, padded with zero rows (.npz 'x')."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, steps, features)).astype(np.float32)
    for i, n in enumerate(rng.integers(1, steps + 1, rows)):
        x[i, n:] = 0.0
    np.savez(path, x=x)
    return path


def convert_each(jobs: list[dict[str, Any]], saves: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Save the models in `saves` (save's keyword arguments), then run each job (run_routes' keyword
    arguments) in order; a typed error is a result ({"error": class name, "message": ...})."""
    from modelkit.converters.routes import run_routes
    from modelkit.errors import ModelkitError

    for item in saves or []:
        save(**item)
    out = []
    for job in jobs:
        try:
            out.append(run_routes(**job))
        except ModelkitError as exc:
            out.append({"error": type(exc).__name__, "message": str(exc), "path": job["dest"]})
    return out
