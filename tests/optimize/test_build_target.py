"""A remembered TVM failure belongs to the target it was built for: an edge-arm64 library (another compiler, a
qemu check) is not the server-cpu one, yet `--target edge-arm64` reported server-cpu's remembered failure
without trying, and an arm64 failure would have hidden server-cpu's TVM candidate the same way."""
from __future__ import annotations

from modelkit.errors import ConversionError
from modelkit.optimization import build as _build

GATE = {"model_sha256": "0" * 64, "data": None, "calibration": None, "data_sha256": None, "max_accuracy_drop": 0.01,
        "batch": 1}


def _tvm(target: str) -> dict:
    return {"build": "tvm-fp32", "format": "tvm", "quantize": None, "engine": "tvm", "target": target,
            "status": "planned", "reason": None}


def test_a_tvm_failure_remembered_for_one_target_is_not_another_targets(monkeypatch, tmp_path):
    calls = []

    def compile_(source, dest, gate, timeout, tune_budget, target="server-cpu"):
        calls.append(target)
        raise ConversionError(f"the {target} compile failed")

    monkeypatch.setattr(_build, "_compile", compile_)
    monkeypatch.delenv("MODELKIT_IMPORTS", raising=False)
    work = tmp_path / "work"
    work.mkdir()
    src = tmp_path / "m.keras"
    assert _build.build(src, _tvm("server-cpu"), work, GATE)["status"] == "failed"
    arm = _build.build(src, _tvm("edge-arm64"), work, GATE)
    assert not arm["cached"] and calls == ["server-cpu", "edge-arm64"]
    assert arm["reason"] == "the edge-arm64 compile failed"
    assert _build.build(src, _tvm("edge-arm64"), work, GATE)["cached"]
    assert _build.build(src, _tvm("server-cpu"), work, GATE)["reason"] == "the server-cpu compile failed"
    assert len(calls) == 2
