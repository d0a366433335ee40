"""benchmarks/coverage.py cannot rot: its command line on one model (a masked LSTM of any length saved under
TensorFlow) to one format that converts and one that is refused (TVM: its importer has no Loop), the JSON
it writes, --resume, and the percentages and table it prints."""
from __future__ import annotations

import json

import pytest

from benchmarks import coverage
from benchmarks.coverage import Cell, render, summarize


@pytest.mark.slow
def test_one_model_two_formats_through_the_command_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MODELKIT_IMPORTS", "")  # the script names its zoo for its children; not for later tests
    out_json = tmp_path / "coverage.json"
    args = ["--models", "masked_lstm", "--backends", "tensorflow", "--formats", "onnx,tvm", "--out",
            str(tmp_path / "work"), "--json", str(out_json), "--cell-timeout", "600"]
    assert coverage.main(args) == 0
    printed = capsys.readouterr().out
    data = json.loads(out_json.read_text())
    cells = {c["format"]: c for c in data["cells"]}
    assert cells["onnx"]["status"] == "ok", cells["onnx"]
    assert cells["onnx"]["max_abs"] <= coverage.ATOL  # against the predictions made when it was saved
    assert cells["tvm"]["status"] == "refused" and cells["tvm"]["error"] == "UnsupportedConversionError"
    assert "TVM's ONNX importer cannot convert masked_lstm.onnx" in cells["tvm"]["message"]
    assert "dimension 'ids' dim 1 is open" in cells["tvm"]["message"]
    assert data["summary"]["overall"] == {"cells": 2, "ok": 1, "refused": 1, "fail": 0, "ok_pct": 50.0,
                                          "ok_or_refused_pct": 100.0}
    assert "| masked_lstm | tensorflow | ok | refused |" in printed
    assert "2 cells: ok 1 (50.0%), typed refusal 1, failed 0; ok or typed refusal 100.0%" in printed
    # --resume keeps the measured cells: nothing is built or converted again
    before = out_json.read_text()
    assert coverage.main([*args, "--resume"]) == 0
    assert json.loads(out_json.read_text())["cells"] == json.loads(before)["cells"]
    assert not (tmp_path / "work" / "tensorflow" / "masked_lstm_artifacts" / "masked_lstm.tvm.so").exists()


def test_percentages_and_failing_cells_are_reported():
    cells = [Cell("a", "cnn", "torch", "onnx", "ok", seconds=1.0, max_abs=1e-6),
             Cell("a", "cnn", "torch", "tflite", "refused", "UnsupportedConversionError", "layer 'x' ..."),
             Cell("b", "mlp", "jax", "onnx", "fail", "ParityError", "b.onnx does not match b.keras: max abs\nmore"),
             Cell("b", "mlp", "jax", "tflite", "ok")]
    s = summarize(cells)
    assert s["overall"] == {"cells": 4, "ok": 2, "refused": 1, "fail": 1, "ok_pct": 50.0, "ok_or_refused_pct": 75.0}
    assert s["by_kind"]["cnn"]["ok_or_refused_pct"] == 100.0 and s["by_backend"]["jax"]["ok_pct"] == 50.0
    assert s["by_format"]["onnx"] == {"cells": 2, "ok": 1, "refused": 0, "fail": 1, "ok_pct": 50.0,
                                      "ok_or_refused_pct": 50.0}
    text = render(cells)
    assert "| a | torch | ok | refused |" in text and "| b | jax | FAIL | ok |" in text
    assert text.rstrip().endswith("- b / jax / onnx: ParityError: b.onnx does not match b.keras: max abs")
