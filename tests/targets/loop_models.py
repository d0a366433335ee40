"""Recurrent Keras models of a fixed length whose ONNX (tf2onnx) holds a Loop, for the TVM unrolling tests;
built and saved in a child process under the backend it runs (tests/targets/test_tvm_loops.py)."""
from __future__ import annotations

from typing import Any


def save(kind: str, path: str, seed: int = 0) -> str:
    import keras

    keras.utils.set_random_seed(seed)
    L = keras.layers
    if kind == "masking_gru":  # padded frames: Masking -> GRU returning sequences -> per-step head
        x = keras.Input((9, 5), name="frames")
        y = L.Dense(3, name="per_step")(L.GRU(6, return_sequences=True)(L.Masking(0.0)(x)))
    elif kind == "masked_bilstm":  # padded token ids: Embedding(mask_zero) -> Bidirectional(LSTM) -> softmax
        x = keras.Input((7,), dtype="int32", name="tokens")
        h = L.Bidirectional(L.LSTM(5))(L.Embedding(25, 6, mask_zero=True)(x))
        y = L.Dense(2, activation="softmax", name="probs")(h)
    else:
        raise ValueError(kind)
    keras.Model(x, y).save(path)
    return path


def padded(kind: str, batch: int, seed: int) -> dict[str, Any]:
    """Inputs with padding at the end, inside the sequence and a row of padding only."""
    import numpy as np

    rng = np.random.default_rng(seed)
    if kind == "masking_gru":
        x = rng.normal(size=(batch, 9, 5)).astype(np.float32)
        x[:, 6:] = 0.0
        x[0, 2:4] = 0.0
        x[-1] = 0.0
        return {"frames": x}
    ids = rng.integers(1, 25, (batch, 7)).astype(np.int32)
    ids[:, 5:] = 0
    ids[0, 1:3] = 0
    ids[-1] = 0
    return {"tokens": ids}
