"""nc125: a digits MLP's "int8" .pte was its float one (1.00x the size, 1.00x the speed): Keras' Dense under torch is
matmul + add, and XNNPACKQuantizer quantizes fully connected layers only as aten.linear. They are written as linear
before it annotates the graph (modelkit.converters._fx_linear)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import modelkit
from tests.helpers.models import trained_on_digits


@pytest.mark.slow
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


@pytest.mark.parametrize("equation, ranks, split", [
    ("abc,cde->abde", (3, 3), (2, 1)), ("abcd,cde->abe", (4, 3), (2, 2)), ("ab,bc->ac", (2, 2), (1, 1)),
    ("abc,dc->abd", (3, 2), None), ("abc,cde->abed", (3, 3), None), ("abc,cd->abcd", (3, 2), None),
    ("...c,cd->...d", (3, 2), None), ("abc,cde,ef->abdf", (3, 3), None), ("aab,bc->ac", (3, 2), None)])
def test_an_einsum_is_a_dense_layer_only_over_x_trailing_axes_and_the_kernels_leading_ones(equation, ranks, split):
    from modelkit.converters._fx_linear import einsum_split

    assert einsum_split(equation, *ranks) == split


@pytest.mark.slow
def test_multi_head_attentions_projections_are_int8_in_an_executorch_int8_program(tmp_path):
    """MultiHeadAttention's query, key, value and output projections are EinsumDense (aten.einsum): float32 in the
    int8 .pte before, each a linear now."""
    import keras
    from sklearn.datasets import load_digits

    keras.utils.set_random_seed(0)
    digits = load_digits()
    x, y = (digits.images / 16.0).astype(np.float32), digits.target
    rows = keras.Input((8, 8), name="rows")
    h = keras.layers.Dense(64)(rows)
    h = keras.layers.LayerNormalization()(h + keras.layers.MultiHeadAttention(4, 32)(h, h))
    model = keras.Model(rows, keras.layers.Dense(10, activation="softmax", name="digit")(
        keras.layers.GlobalAveragePooling1D()(h)))
    src, calib, test = trained_on_digits(model, x, y, tmp_path, "attention", epochs=10)
    options = {"quantize": "int8", "calibration_data": str(calib), "eval_data": str(test)}
    (q,) = modelkit.convert(src, "executorch", out_dir=tmp_path / "int8", options=options)
    assert q.quantization == "int8" and q.accuracy["ok"] and q.accuracy["drop"] <= 0.01, q.accuracy
    assert q.accuracy["source_accuracy"] >= 0.7, q.accuracy  # a small attention over 8 rows, 10 epochs
    float_bytes = 4 * model.count_params()  # 35k weights, 33k of them in the attention; the program 20 KB more
    assert Path(q.path).stat().st_size < 0.6 * float_bytes, (Path(q.path).stat().st_size, float_bytes, q.accuracy)
