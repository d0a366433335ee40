"""int8 TFLite of recurrent models unrolled over a fixed length (nc93: a GRU autoencoder's int8 file was 1.8x its
float32 one). Unrolled, every step is its own FULLY_CONNECTED ops on shared weights, and each step's bias is
requantized with that step's input scale; with per-channel weights each of those copies carried a scale and a zero
point per output channel. Dense weights are quantized per tensor on these routes (keras_tflite.unrolled_recurrence)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import modelkit


def _digit_rows(folder, unroll: bool):
    """A GRU -> LSTM -> softmax classifier of the digits' 8 rows (8 steps of 8 values), trained on 1400 of them;
    saved with the calibration samples and the held-out test split."""
    from sklearn.datasets import load_digits

    from modelkit._backend import import_keras

    keras = import_keras("tensorflow")
    keras.utils.set_random_seed(0)
    digits = load_digits()
    x, y = (digits.images / 16.0).astype(np.float32), digits.target
    rows = keras.Input((8, 8), name="rows")
    h = keras.layers.GRU(48, return_sequences=True, unroll=unroll)(rows)
    h = keras.layers.LSTM(48, unroll=unroll)(h)
    model = keras.Model(rows, keras.layers.Dense(10, activation="softmax", name="digit")(h))
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    model.fit(x[:1400], y[:1400], epochs=12, batch_size=32, verbose=0)
    model.save(folder / "rows.keras")
    np.savez(folder / "calib.npz", rows=x[:200])
    np.savez(folder / "test.npz", rows=x[1400:], y=y[1400:])
    return folder / "rows.keras"


def _fully_connected_weight_scales(path) -> list[int]:
    """How many scales each int8 weight of a FULLY_CONNECTED op carries."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(str(path))
    details = {d["index"]: d for d in it.get_tensor_details()}
    counts = []
    for op in it._get_ops_details():  # noqa: SLF001 - the interpreter's own op listing
        if op["op_name"] == "FULLY_CONNECTED":
            weight = details[op["inputs"][1]]
            if weight["dtype"] == np.int8:
                counts.append(len(weight["quantization_parameters"]["scales"]))
    return counts


@pytest.mark.parametrize("unroll", [False, pytest.param(True, marks=pytest.mark.slow)],
                         ids=["modelkit-unrolled", "keras-unroll"])
@pytest.mark.slow
def test_int8_of_an_unrolled_recurrent_model_is_smaller_and_keeps_its_accuracy(unroll, tmp_path):
    src = _digit_rows(tmp_path, unroll)
    (fp32,) = modelkit.convert(src, "tflite", out_dir=tmp_path / "fp32")
    options = {"quantize": "int8", "calibration_data": str(tmp_path / "calib.npz"),
               "eval_data": str(tmp_path / "test.npz")}
    (int8,) = modelkit.convert(src, "tflite", out_dir=tmp_path / "int8", options=options)
    assert int8.route["taken"] == ("converter" if unroll else "unrolled"), int8.route
    assert int8.accuracy["source_accuracy"] > 0.8 and int8.accuracy["ok"], int8.accuracy
    assert int8.accuracy["drop"] <= 0.01, int8.accuracy
    scales = _fully_connected_weight_scales(int8.path)
    assert scales and set(scales) == {1}, scales  # per tensor; per channel: 144 / 192 scales each
    # 0.68 here; 0.91 with per-channel dense weights (and 1.8x for nc93's GRU autoencoder over 24 steps)
    assert int8.size_bytes / fp32.size_bytes < 0.8, (int8.size_bytes, fp32.size_bytes)
    extra = json.loads(Path(f"{int8.path}.modelkit.json").read_text())["extra"]
    assert extra["int8_dense_weights"] == "per-tensor", extra
