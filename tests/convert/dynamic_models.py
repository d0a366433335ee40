"""Models with dynamic non-batch dimensions, as users build them, for tests/convert/test_dynamic_dims.py.

`save` builds one under whatever Keras backend its process runs (tests call it in children to get
.keras files saved under torch and JAX); `convert_each` runs conversion hops in one child process and
reports each hop's result or typed error, so one child per backend serves every model of the test.
Weights are untrained but seeded and non-constant (glorot), so parity checks are not vacuous.
"""
from __future__ import annotations

from typing import Any, Callable


def _conv1d(keras: Any) -> Any:
    """A sequence classifier: valid Conv1D, strided 'same' max pooling, Conv1D, global average pooling."""
    L = keras.layers
    x = keras.Input((None, 8), name="signal")
    h = L.Conv1D(16, 3, activation="relu")(x)
    h = L.MaxPooling1D(2, padding="same")(h)
    h = L.Conv1D(16, 3, padding="same", activation="relu")(h)
    return keras.Model(x, L.Dense(4, activation="softmax", name="probs")(L.GlobalAveragePooling1D()(h)))


def _gru(keras: Any) -> Any:
    """Per-step outputs: a GRU over (None, 6) returning sequences, a Dense per step (output length = input's)."""
    L = keras.layers
    x = keras.Input((None, 6), name="frames")
    return keras.Model(x, L.Dense(3, name="per_step")(L.GRU(8, return_sequences=True)(x)))


def _causal(keras: Any) -> Any:
    """A Transformer decoder block: causal self-attention, residuals, LayerNorm, a GELU feed-forward."""
    L = keras.layers
    x = keras.Input((None, 16), name="tokens")
    a = L.MultiHeadAttention(num_heads=2, key_dim=8, name="attention")(x, x, use_causal_mask=True)
    h = L.LayerNormalization()(L.Add()([x, a]))
    f = L.Dense(16)(L.Dense(32, activation="gelu")(h))
    h = L.LayerNormalization()(L.Add()([h, f]))
    return keras.Model(x, L.Dense(10, name="logits")(h))


def _image(keras: Any) -> Any:
    """Images of any height and width: (None, None, 3), convolutions, global average pooling."""
    L = keras.layers
    x = keras.Input((None, None, 3), name="image")
    h = L.Conv2D(8, 3, padding="same", activation="relu")(x)
    h = L.Conv2D(8, 3, padding="same", activation="relu")(h)
    return keras.Model(x, L.Dense(5, activation="softmax", name="probs")(L.GlobalAveragePooling2D()(h)))


def _resize(keras: Any) -> Any:
    """Images of any size resized inside the model (a Keras Resizing layer: TVM's importer refused the Resize
    tf2onnx writes for it until modelkit/targets/tvm/mends.py), bilinear then nearest, with a Rescaling."""
    L = keras.layers
    x = keras.Input((None, None, 3), name="image")
    h = L.Rescaling(1 / 255.0)(L.Resizing(24, 20)(x))
    h = L.Conv2D(8, 3, padding="same", activation="relu")(h)
    h = L.Resizing(12, 12, interpolation="nearest")(h)
    return keras.Model(x, L.Dense(4, activation="softmax", name="probs")(L.GlobalAveragePooling2D()(h)))


def _embed(keras: Any) -> Any:
    """Token ids of any length: Embedding over int sequences (None,), mean over time, a Dense head."""
    L = keras.layers
    x = keras.Input((None,), dtype="int32", name="ids")
    h = L.Embedding(50, 8)(x)
    return keras.Model(x, L.Dense(3, name="score")(L.GlobalAveragePooling1D()(h)))


def _tcn(keras: Any) -> Any:
    """A temporal convolution stack: dilated causal Conv1Ds, a valid Conv1D (needs length >= 3), global max."""
    L = keras.layers
    x = keras.Input((None, 4), name="series")
    h = L.Conv1D(8, 2, padding="causal", dilation_rate=1, activation="relu")(x)
    h = L.Conv1D(8, 2, padding="causal", dilation_rate=2, activation="relu")(h)
    h = L.Conv1D(8, 3, activation="relu")(h)
    return keras.Model(x, L.Dense(2, name="forecast")(L.GlobalMaxPooling1D()(h)))


def _posenc(keras: Any) -> Any:
    """Sinusoidal positions added for any length by a registered layer that calls ops.arange on the length
    it reads with ops.shape (a symbolic size under torch.export), then a GELU feed-forward and a mean."""
    L = keras.layers
    x = keras.Input((None, 8), name="events")
    h = _position_layer(keras)()(L.Dense(8)(x))
    h = L.Dense(8, activation="gelu")(h)
    return keras.Model(x, L.Dense(2, name="score")(L.GlobalAveragePooling1D()(h)))


def _position_layer(keras: Any) -> Any:
    if "tests>SinePositions" in keras.saving.get_custom_objects():
        return keras.saving.get_custom_objects()["tests>SinePositions"]
    ops = keras.ops

    @keras.saving.register_keras_serializable(package="tests")
    class SinePositions(keras.layers.Layer):
        def call(self, x: Any) -> Any:
            pos = ops.cast(ops.arange(ops.shape(x)[1]), "float32")[:, None]
            freq = ops.exp(ops.cast(ops.arange(x.shape[-1]), "float32") * -0.5)[None, :]
            return x + ops.sin(pos * freq)[None]

    return SinePositions


BUILDERS: dict[str, Callable[[Any], Any]] = {
    "conv1d": _conv1d, "gru": _gru, "causal": _causal, "image": _image, "embed": _embed, "tcn": _tcn,
    "posenc": _posenc, "resize": _resize}


def save(kind: str, path: str, seed: int = 0) -> str:
    """Build model `kind` under this process's Keras backend and save it to `path`."""
    import keras

    keras.utils.set_random_seed(seed)
    BUILDERS[kind](keras).save(path)
    return path


def convert_each(jobs: list[dict[str, Any]], saves: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Save the models in `saves` (save's keyword arguments) under this process's backend, then run each
    hop (run_hop's keyword arguments) in order; a typed error is a result ({"error": class name,
    "message": ...}), anything else propagates."""
    import keras

    from modelkit.converters.hop import run_hop
    from modelkit.errors import ModelkitError

    _position_layer(keras)  # registered before any hop loads a model that uses it
    for item in saves or []:
        save(**item)
    out = []
    for job in jobs:
        try:
            out.append(run_hop(**job))
        except ModelkitError as exc:
            out.append({"error": type(exc).__name__, "message": str(exc), "path": job["dest"]})
    return out
