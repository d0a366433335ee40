"""Models for tests/convert/test_multi_format.py, saved in a child under the TensorFlow backend."""
from __future__ import annotations

from typing import Any


def _lookup(keras: Any) -> Any:
    """Integer category ids through IntegerLookup to a Dense head; with no OOV index (an assertion on unknown ids)
    it stays a TF table lookup: SavedModel only."""
    L = keras.layers
    x = keras.Input((1,), dtype="int64", name="category")
    h = L.IntegerLookup(vocabulary=[3, 7, 11, 19], num_oov_indices=0, output_mode="one_hot")(x)
    return keras.Model(x, L.Dense(2, name="score")(h))


def _lstm(keras: Any) -> Any:
    """An LSTM of open length: TVM's ONNX importer has no LSTM, and modelkit unrolls fixed lengths only."""
    L = keras.layers
    x = keras.Input((None, 3), name="steps")
    return keras.Model(x, L.Dense(2, name="value")(L.LSTM(5)(x)))


def _heads(keras: Any) -> Any:
    """Self-attention over a fixed length: the exporter computes the heads' Reshape shapes from the batch."""
    L = keras.layers
    x = keras.Input((12, 8), name="tokens")
    a = L.MultiHeadAttention(num_heads=2, key_dim=4)(x, x)
    h = L.LayerNormalization()(L.Add()([x, a]))
    return keras.Model(x, L.Dense(3, name="logits")(L.GlobalAveragePooling1D()(h)))


def _masked_heads(keras: Any) -> Any:
    """nc35's shape: padded token ids, Embedding(mask_zero=True), self-attention under the padding mask, masked
    average pooling (tf2onnx slices the mask `[0:1000000000]` and computes the heads' Reshape from the batch)."""
    L = keras.layers
    x = keras.Input((10,), dtype="int32", name="ids")
    h = L.Embedding(30, 8, mask_zero=True)(x)
    h = L.LayerNormalization()(L.Add()([h, L.MultiHeadAttention(num_heads=2, key_dim=4)(h, h)]))
    return keras.Model(x, L.Dense(3, name="logits")(L.GlobalAveragePooling1D()(h)))


def _pool3d(keras: Any) -> Any:
    """3-D max and average pooling with depth windows, 'same' and 'valid' padding (TFLite has 2-D pooling only)."""
    L = keras.layers
    x = keras.Input((5, 9, 9, 2), name="clip")
    h = L.Conv3D(4, 2, padding="same", activation="tanh")(x)
    h = L.MaxPooling3D((2, 2, 2), padding="same")(h)
    h = L.AveragePooling3D((2, 3, 3), strides=(1, 2, 2), padding="same")(h)
    h = L.MaxPooling3D((2, 1, 1), strides=(1, 1, 1))(h)
    return keras.Model(x, L.Dense(3, name="out")(L.Flatten()(h)))


BUILDERS = {"lookup": _lookup, "lstm": _lstm, "heads": _heads, "masked_heads": _masked_heads, "pool3d": _pool3d}


def save(folder: str) -> dict[str, str]:
    """Save every model to `folder` under this process's backend; {name: path}."""
    import keras

    out = {}
    for name, build in BUILDERS.items():
        keras.utils.set_random_seed(0)
        out[name] = f"{folder}/{name}.keras"
        build(keras).save(out[name])
    return out
