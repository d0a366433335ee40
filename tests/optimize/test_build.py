"""optimize.build's memory of failed builds: what a rerun may skip, and what it must try again."""
from __future__ import annotations

import pytest

from modelkit.errors import ConversionError
from modelkit.optimization import build as _build

B = {"build": "onnx-fp32", "format": "onnx", "quantize": None, "engine": "onnxruntime", "status": "planned",
     "reason": None}
GATE = {"model_sha256": "0" * 64, "data": None, "calibration": None, "data_sha256": None, "max_accuracy_drop": 0.01,
        "batch": 1}


@pytest.fixture
def failing(monkeypatch, tmp_path):
    calls = []

    def convert(source, b, work, gate, timeout):
        calls.append(timeout)
        raise ConversionError("the conversion failed")

    monkeypatch.setattr(_build, "_convert", convert)
    monkeypatch.delenv("MODELKIT_IMPORTS", raising=False)
    return calls, tmp_path / "m.keras", tmp_path / "work"


def test_a_remembered_failure_is_not_tried_again_but_naming_a_module_tries_it(failing, monkeypatch, tmp_path):
    calls, src, work = failing
    work.mkdir()
    first = _build.build(src, B, work, GATE)
    again = _build.build(src, B, work, GATE)
    assert (first["status"], first["cached"], again["status"], again["cached"]) == ("failed", False, "failed", True)
    assert len(calls) == 1
    layers = tmp_path / "layers.py"
    layers.write_text("")
    monkeypatch.setenv("MODELKIT_IMPORTS", str(layers))  # what --import sets
    assert not _build.build(src, B, work, GATE)["cached"] and len(calls) == 2


def test_a_build_the_budget_cut_short_is_not_remembered(failing):
    calls, src, work = failing
    work.mkdir()
    assert _build.build(src, B, work, GATE, timeout=0.0)["status"] == "failed"
    assert not _build.build(src, B, work, GATE, timeout=0.0)["cached"] and len(calls) == 2
    assert not (work / "failed.json").exists()
