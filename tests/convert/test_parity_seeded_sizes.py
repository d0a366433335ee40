"""A quantized artifact's output difference, told apart on the samples and on seeded inputs at other sizes (nc69:
an int8 super-resolution model of any image size, calibrated on 4x4 digit images, differed from its float source
by 0.014 on the user's samples and by 0.56 on seeded uniform inputs at 13x64; the progress line and the table
said only "outputs differ by up to 5.6e-01")."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np

from modelkit.converters.hop import _verdict
from modelkit.converters.parity_report import split_max_abs
from modelkit.converters.registry import Tolerance
from modelkit.converters.result import ConversionResult
from modelkit.converters.verify import compare_models
from modelkit.spec import Signature, TensorSpec

SIG = Signature((TensorSpec("x", (None, None)),), (TensorSpec("y", (None, None)),))
LOOSE = Tolerance(atol=1.0, min_cosine=0.5)


def _model(offset_off_size: float) -> SimpleNamespace:
    """y = 2x, plus `offset_off_size` wherever the length is not the samples' 5."""
    def predict(feed):
        x = feed["x"]
        return {"y": (2 * x + (offset_off_size if x.shape[1] != 5 else 1e-3)).astype(np.float32)}
    return SimpleNamespace(signature=SIG, path=Path("model.onnx"), predict=predict)


def _report():
    reference = SimpleNamespace(signature=SIG, path=Path("model.keras"),
                                predict=lambda feed: {"y": (2 * feed["x"]).astype(np.float32)})
    data = {"x": np.random.default_rng(0).random((8, 5), dtype=np.float32)}
    return compare_models(reference, _model(0.5), LOOSE, data=data)


def test_the_samples_and_the_seeded_sizes_are_told_apart():
    report = _report()
    assert any(c.get("seeded") for c in report.cases) and any(not c.get("seeded") for c in report.cases)
    own, seeded = split_max_abs(report.to_dict())
    assert abs(own - 1e-3) < 1e-6 and abs(seeded - 0.5) < 1e-6
    quantized = ConversionResult("tflite", "m.int8.tflite", 1.0, 1, report.to_dict(), quantization="int8")
    exact = ConversionResult("tflite", "m.tflite", 1.0, 1, report.to_dict())
    assert abs(quantized.max_abs - 1e-3) < 1e-6  # the table's column for a quantized artifact
    assert abs(exact.max_abs - 0.5) < 1e-6  # an exact one is judged on every case: its worst
    accuracy = {"source_accuracy": 0.9, "artifact_accuracy": 0.9, "drop": 0.0, "max_accuracy_drop": 0.01,
                "ok": True, "samples": 10, "data": "eval.npz"}
    line = _verdict(report, accuracy, "int8")
    assert "outputs differ by up to 1.0e-03 on the samples (5.0e-01 on seeded inputs at other sizes) (int8" in line


def test_without_samples_every_case_counts():
    reference = SimpleNamespace(signature=SIG, path=Path("model.keras"),
                                predict=lambda feed: {"y": (2 * feed["x"]).astype(np.float32)})
    report = compare_models(reference, _model(0.5), LOOSE)
    assert not any(c.get("seeded") for c in report.cases)
    assert split_max_abs(report.to_dict()) == (max(o.max_abs for o in report.outputs), None)
