"""benchmarks/bench_install_size.py cannot rot: it measures every runtime-only extra from pyproject.toml and this
environment's metadata, and a runtime-only extra resolves to no converter or other framework (no numbers are
asserted: the figures are the benchmark's)."""
from __future__ import annotations

import json

import pytest

from benchmarks import bench_install_size as bench
from tests.helpers.extras import MissingDistribution, extras, requirements

NEVER = {"onnx", "onnxscript", "onnxslim", "onnx-ir", "tf2onnx", "tensorflow", "tensorflow-cpu", "keras", "jax",
         "scikit-learn"}


def test_every_runtime_only_extra_is_measured():
    declared = [e for e in extras() if e.startswith("run-")]
    assert sorted(declared) == sorted(bench.RUNTIME_ONLY)
    for extra in declared:
        assert not any(r.startswith("modelkit[") for r in extras()[extra]), f"{extra} pulls another extra"


@pytest.mark.parametrize("extra", ["run-onnx", "run-tflite", "run-torch", "run-tvm"])
def test_a_runtime_only_extra_holds_no_converter(extra):
    try:
        row = bench.measure(extra)
    except MissingDistribution as exc:
        pytest.skip(str(exc))
    assert not NEVER & set(row["distributions"]), sorted(NEVER & set(row["distributions"]))
    others = {"run-onnx": "onnxruntime", "run-tflite": "ai-edge-litert", "run-torch": "torch", "run-tvm": "apache-tvm"}
    assert {others[e] for e in others if e != extra}.isdisjoint(row["distributions"])
    assert row["ratio"] >= 1 and row["bytes"] > row["baseline_bytes"]  # the core (click, jsonschema) adds a little
    assert set(row["added"]) <= set(row["distributions"])
    core = {r.split("==")[0] for r in requirements(None)}
    assert core <= set(row["distributions"])


def test_the_report(tmp_path, monkeypatch, capsys):
    try:
        bench.measure("onnx", "run-onnx")
    except MissingDistribution as exc:
        pytest.skip(str(exc))
    monkeypatch.setattr("sys.argv", ["bench_install_size.py", "--out", str(tmp_path)])
    assert bench.main() == 0
    printed = capsys.readouterr().out
    report = json.loads((tmp_path / "bench_install_size.json").read_text())
    rows = {r["extra"]: r for r in report["rows"]}
    assert rows["onnx"]["bytes"] > 1.5 * rows["run-onnx"]["bytes"]  # what the runtime-only extra leaves out
    assert rows["onnx"]["baseline_bytes"] == rows["run-onnx"]["baseline_bytes"]
    assert "| run-onnx |" in printed and report["goal"] == bench.GOAL
