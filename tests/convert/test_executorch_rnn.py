"""Recurrent layers to ExecuTorch (nc70: a next-frame predictor of two ConvLSTM2D layers, trained on TF, torch and
JAX). They were refused before any work: Keras' recurrent loop exported and lowered, then the program failed at
its first run (LSTM / GRU: error 0x10; SimpleRNN's and ConvLSTM's export fixed the batch). Exported with modelkit's
unrolled loop (converters/_unroll.py: the cell's own ops per step, masks as `where`, no fused kernel) the program
runs, except that the runtime fails the gates' split of a tensor with an open batch (error 0x12), which is now
taken as slices (converters/_torch_export_ops.py)."""
from __future__ import annotations

import numpy as np
import pytest

import modelkit

pytest.importorskip("executorch", reason="ExecuTorch is not installed (pip install 'modelkit[executorch]')")


LENGTH = 6  # every recurrent layer runs unrolled, one copy of its cell per position: the lowering's cost grows with it


def _tokens(count: int, seed: int = 0) -> np.ndarray:
    """Token ids of LENGTH positions, padded with 0 after 2..LENGTH - 1 of them."""
    rng = np.random.default_rng(seed)
    x = rng.integers(1, 20, (count, LENGTH)).astype("int32")
    for i, n in enumerate(rng.integers(2, LENGTH, count)):
        x[i, n:] = 0
    return x


@pytest.mark.slow
def test_masked_gru_lstm_and_simple_rnn_convert_to_executorch(tmp_path):
    from modelkit._backend import import_keras

    keras = import_keras("tensorflow")
    keras.utils.set_random_seed(0)
    L = keras.layers
    ids = keras.Input((LENGTH,), dtype="int32", name="tokens")
    e = L.Embedding(20, 8, mask_zero=True)(ids)
    h = L.Bidirectional(L.GRU(6, return_sequences=True))(e)
    h = L.Concatenate()([L.LSTM(5)(h), L.SimpleRNN(4)(h)])
    model = keras.Model(ids, L.Dense(2, activation="softmax", name="p")(h))
    src = tmp_path / "tagger.keras"
    model.save(src)
    np.savez(tmp_path / "tokens.npz", tokens=_tokens(40))
    (r,) = modelkit.convert(src, "executorch", out_dir=tmp_path / "out", data=str(tmp_path / "tokens.npz"))
    assert r.parity["ok"] and r.max_abs < 1e-5
    x = _tokens(5, seed=1)  # other sentences, another batch
    want = model.predict(x, verbose=0)
    assert want.std(axis=0).max() > 1e-4  # the answers differ between sentences: not a vacuous check
    np.testing.assert_allclose(modelkit.load(r.path).predict(x)["p"], want, atol=1e-5)


@pytest.mark.slow
def test_a_conv_lstm_next_frame_predictor_converts_to_executorch(tmp_path):
    from modelkit._backend import import_keras

    keras = import_keras("tensorflow")
    keras.utils.set_random_seed(0)
    L = keras.layers
    frames = keras.Input((4, 6, 8, 1), name="frames")
    h = L.ConvLSTM2D(4, 3, padding="same", return_sequences=True)(frames)
    h = L.ConvLSTM2D(4, 3, padding="same")(h)
    model = keras.Model(frames, L.Conv2D(1, 3, padding="same", activation="sigmoid", name="next_frame")(h))
    src = tmp_path / "nowcast.keras"
    model.save(src)
    (r,) = modelkit.convert(src, "executorch", out_dir=tmp_path / "out")
    assert r.parity["ok"]
    x = np.random.default_rng(2).random((3, 4, 6, 8, 1), dtype=np.float32)
    np.testing.assert_allclose(modelkit.load(r.path).predict(x)["next_frame"], model.predict(x, verbose=0),
                               atol=1e-5)
