"""int8 of a tabular model whose Normalization sees raw features of very different scales (breast cancer:
areas in the thousands, smoothness near 0.1): quantized per tensor, the normalization's constants and the small
features rounded to zero and the int8 model answered one class for every row (accuracy 0.626 against 0.959,
onnxruntime and TFLite alike). Those ops now stay float32 (modelkit.converters.float_islands)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import modelkit
from modelkit.converters.float_islands import Op, kept_float, wide


def test_the_rule_keeps_a_normalization_over_raw_features_and_nothing_else():
    mean, scale = np.array([0.004, 14.1, 876.0]), np.array([330.0, 0.28, 0.0017])
    ops = [Op("sub", "sub", ("x", "mean"), ("c",)), Op("mul", "mul", ("c", "scale"), ("n",)),
           Op("mm", "matmul", ("n", "w"), ("h",)), Op("bias", "add", ("h", "b"), ("h2",)),
           Op("rescale", "mul", ("h2", "half"), ("y",))]
    constants = {"mean": mean, "scale": scale, "w": np.ones((3, 4)), "b": np.array([1e-4, 0.5, -0.3, 0.2]),
                 "half": np.array(0.5)}
    assert kept_float(ops, constants, ["x"]) == ["sub", "mul"]
    # a narrow normalization (ImageNet's mean and std), a bias Add inside the graph: quantized as before
    narrow = {**constants, "mean": np.array([0.485, 0.456, 0.406]), "scale": 1 / np.array([0.229, 0.224, 0.225])}
    assert kept_float(ops, narrow, ["x"]) == []
    # centering alone, on a model input, of features of very different scales
    assert kept_float(ops[:1], {"mean": mean}, ["x"]) == ["sub"]
    assert kept_float(ops[:1], {"mean": mean}, []) == []
    assert wide(np.array([0.0, 1.0, 65.0])) and not wide(np.array([0.0, 1.0, 63.0])) and not wide(np.array(5.0))


@pytest.fixture(scope="module")
def cancer(tmp_path_factory):
    """The newcomer's model (nc24: sklearn's breast cancer, Normalization adapted on the raw features, one
    sigmoid), trained in a child under TensorFlow; (model, calibration .npz, eval .npz)."""
    folder = tmp_path_factory.mktemp("cancer")
    code = f"""
import keras, numpy as np
from sklearn.datasets import load_breast_cancer
keras.utils.set_random_seed(0)
x, y = load_breast_cancer(return_X_y=True)
x = x.astype("float32")
order = np.random.default_rng(0).permutation(len(x))
x, y = x[order], y[order]
norm = keras.layers.Normalization()
norm.adapt(x[:400])
m = keras.Sequential([keras.Input((30,), name="features"), norm, keras.layers.Dense(32, activation="relu"),
                      keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1, activation="sigmoid")])
m.compile("adam", "binary_crossentropy")
m.fit(x[:400], y[:400], epochs=40, batch_size=32, verbose=0)
m.save(r"{folder / 'cancer.keras'}")
np.savez(r"{folder / 'train.npz'}", x=x[:400])
np.savez(r"{folder / 'test.npz'}", x=x[400:], y=y[400:])
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=600,
                   env={**os.environ, "KERAS_BACKEND": "tensorflow"})
    return folder / "cancer.keras", folder / "train.npz", folder / "test.npz"


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_int8_of_a_tabular_model_keeps_its_normalization_float_and_its_accuracy(cancer, tmp_path, capfd, fmt):
    src, train, test = cancer
    options = {"quantize": "int8", "calibration_data": str(train), "eval_data": str(test)}
    (r,) = modelkit.convert(src, fmt, out_dir=tmp_path, options={**options, **({"route": "tf2onnx"} if fmt == "onnx"
                                                                              else {})})
    acc = r.accuracy
    assert acc["ok"] and acc["source_accuracy"] >= 0.9 and acc["drop"] <= 0.01, acc
    assert acc["metric"] == "binary" and acc["decision_agreement"] >= 0.97
    line = next(ln for ln in capfd.readouterr().err.splitlines() if "kept in float32" in ln)
    assert "int8: 2 op(s) kept in float32" in line and "normalization" in line
    assert json.loads(Path(r.path + ".modelkit.json").read_text())["parity"]["ok"]
    fed = np.load(test)["x"][:16]  # the int8 model's output follows its input, not one class for every row
    assert np.ptp(next(iter(modelkit.load(r.path).predict({"features": fed}).values()))) > 0.5
