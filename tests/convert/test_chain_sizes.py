"""Sizes the chain's first source cannot run at are not verified further down the chain (verify.unrunnable_shapes).

nc134, a digits classifier on raw uint8 pixels of any size (Rescaling, Conv2D, MaxPooling2D, GlobalMaxPooling2D):
at a side of 1 the pooled map is empty and Keras refuses ("Cannot compute the max of an empty tensor"), so the keras
-> onnx hop skipped that size; the ONNX made from it still ran there, so the onnx -> openvino hop compared at it and
failed (OpenVINO: "MaxPool ... Check 'cmp::le(kernel, dim.get_length())' failed"), as did TVM (NaN where onnxruntime
gave numbers): 2 of 8 formats lost for sizes that are not the model's."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import modelkit
from modelkit.converters.verify import shape_key, unrunnable_shapes


@pytest.mark.slow
def test_openvino_and_tvm_are_verified_at_the_sizes_the_keras_model_runs_at(tmp_path):
    from modelkit._backend import import_keras

    keras = import_keras("tensorflow")
    L = keras.layers
    keras.utils.set_random_seed(4)
    x = keras.Input((None, None, 1), dtype="uint8", name="pixels")
    h = L.MaxPooling2D()(L.Conv2D(8, 3, padding="same", activation="relu")(L.Rescaling(1 / 255.0)(x)))
    out = L.Dense(10, activation="softmax", name="digit")(L.GlobalMaxPooling2D()(h))
    model = keras.Model(x, out)
    model.save(tmp_path / "raw.keras")
    results = {r.format: r for r in modelkit.convert(tmp_path / "raw.keras", "onnx,openvino,tvm", out_dir=tmp_path)}
    pixels = np.random.default_rng(0).integers(0, 256, (2, 9, 14, 1)).astype(np.uint8)
    want = np.asarray(model(pixels))
    for fmt in ("openvino", "tvm"):
        skipped = results[fmt].parity["skipped_cases"]
        assert any(s["reason"] == "the chain's source could not run at these sizes" for s in skipped), fmt
        np.testing.assert_allclose(modelkit.load(results[fmt].path).predict(pixels)["digit"], want, atol=1e-5)


def test_unrunnable_shapes_are_the_reference_skips_without_the_batch():
    parity = {"skipped_cases": [
        {"batch": 1, "shapes": {"x": [1, 1, 13, 1]}, "skipped": "reference", "reason": "..."},
        {"batch": 7, "shapes": {"x": [7, 64, 1, 1]}, "skipped": "reference", "reason": "..."},
        {"batch": 1, "shapes": {"x": [1, 5, 5, 1]}, "skipped": "candidate", "reason": "..."}]}
    got = unrunnable_shapes(SimpleNamespace(parity=parity))
    assert got == {shape_key({"x": [3, 1, 13, 1]}), shape_key({"x": [1, 64, 1, 1]})}
    assert unrunnable_shapes(None) == set() and unrunnable_shapes(SimpleNamespace(parity=None)) == set()
