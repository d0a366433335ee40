"""nc125: a digits MLP's "int8" .pte was its float one (1.00x the size, 1.00x the speed): Keras' Dense under torch is
matmul + add, and XNNPACKQuantizer quantizes fully connected layers only as aten.linear. They are written as linear
before it annotates the graph (modelkit.converters._fx_linear)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

import modelkit
from tests.helpers.models import trained_on_digits


def test_dense_layers_over_rows_and_vectors_are_int8_in_an_executorch_int8_program(tmp_path):
    import keras
    from sklearn.datasets import load_digits

    keras.utils.set_random_seed(0)
    digits = load_digits()
    x, y = (digits.images / 16.0).astype(np.float32), digits.target
    model = keras.Sequential([keras.Input((8, 8), name="rows"), keras.layers.Dense(128, activation="relu"),
                              keras.layers.Flatten(), keras.layers.Dense(128, activation="relu"),
                              keras.layers.Dense(10, activation="softmax", name="digit")])
    src, calib, test = trained_on_digits(model, x, y, tmp_path, "mlp", epochs=5)
    options = {"quantize": "int8", "calibration_data": str(calib), "eval_data": str(test)}
    (q,) = modelkit.convert(src, "executorch", out_dir=tmp_path / "int8", options=options)
    assert q.quantization == "int8" and q.accuracy["ok"] and q.accuracy["drop"] <= 0.01, q.accuracy
    assert q.accuracy["source_accuracy"] >= 0.85, q.accuracy
    float_bytes = 4 * model.count_params()  # 133k weights, 4 bytes each in float32 and 1 in int8
    assert Path(q.path).stat().st_size < 0.35 * float_bytes, (Path(q.path).stat().st_size, float_bytes)
    rows = x[1400:1432]
    got = modelkit.load(q.path).predict({"rows": rows})["digit"]
    assert (got.argmax(1) == model.predict(rows, verbose=0).argmax(1)).mean() >= 0.9
