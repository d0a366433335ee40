"""Each benchmark runs in its own child process: settings and imports do not leak, the parent stays light."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from modelkit import _child
from modelkit.bench.worker import FRAMEWORKS

ROOT = Path(__file__).resolve().parents[2]


def _measure(path: Path, threads: int | None) -> dict:
    return _child.run("modelkit.bench.worker:measure", {
        "artifact": str(path), "mode": "run", "batches": [1, 3], "threads": threads, "device": "cpu",
        "iterations": 3, "duration": None, "warmup": 0, "label": path.name, "index": 1, "total": 2})


def test_thread_setting_of_one_child_does_not_show_in_the_next(tiny_onnx, monkeypatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    one = _measure(tiny_onnx, threads=1)
    other = _measure(tiny_onnx, threads=None)
    assert one["env"]["OMP_NUM_THREADS"] == "1"
    assert other["env"]["OMP_NUM_THREADS"] is None  # not inherited from the earlier child
    assert one["pid"] != other["pid"]
    assert one["frameworks"] == other["frameworks"] == ["onnxruntime"]
    assert [b["batch"] for b in one["batches"]] == [1, 3] and all(b["iterations"] == 3 for b in one["batches"])


def test_parent_imports_no_framework(tiny_onnx) -> None:
    code = textwrap.dedent(f"""
        import json, sys
        from modelkit.bench import run_bench
        from modelkit.bench.report import text_table
        r = run_bench([{str(tiny_onnx)!r}], batches=(1, 4), iterations=3, warmup=0)
        text_table(r)
        print(json.dumps({{"parent": [m for m in {FRAMEWORKS!r} if m in sys.modules],
                           "child": r["rows"][0]["frameworks"], "flops": [x["flops"] for x in r["rows"]]}}))
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {"parent": [], "child": ["onnxruntime"], "flops": [30, 120]}
    assert "[2/2] tiny.onnx b=4 ... p50" in proc.stderr


def test_a_fixed_batch_artifact_is_measured_at_its_batch_only(tmp_path, capfd) -> None:
    from tests.helpers import make_tiny_onnx

    fixed = make_tiny_onnx(tmp_path / "fixed1.onnx", batch=1)  # like a TVM library tuned at batch 1
    got = _child.run("modelkit.bench.worker:measure", {
        "artifact": str(fixed), "mode": "run", "batches": [1, 8, 32], "threads": 1, "device": "cpu",
        "iterations": 3, "duration": None, "warmup": 0, "label": fixed.name, "index": 1, "total": 3})
    (row,) = got["batches"]  # b=8 and b=32 are not faked by feeding one row and counting 8 or 32
    assert row["batch"] == 1
    assert row["throughput_sps"] == pytest.approx(1000.0 / row["latency_ms"]["mean"], rel=1e-6)
    assert "fixes the batch at 1; measuring b=1 only (skipped b=8,32)" in capfd.readouterr().err
