"""modelkit.optimization.measure: persistent workers per candidate, interleaved rounds, accuracy, failures."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from modelkit.optimization import measure as m

ROOT = Path(__file__).resolve().parents[2]
MEASURED = {"status", "p50_ms", "p99_ms", "ci95_ms", "rounds_ms", "calls", "accuracy", "load_s", "batch"}


class FakeProbe:
    """Served instead of Probe (no engine): dies or raises in its round by its path, else fixed times."""

    def __init__(self, path: str, **_: object) -> None:
        self.path = path

    def info(self) -> dict:
        return {"load_s": 0.5, "accuracy": None, "worker": {"env": {}, "pid": os.getpid()}}

    def round(self, seconds: float) -> list[float]:
        if self.path == "die":
            sys.stdout.flush()
            os._exit(7)
        if self.path == "raise":
            raise ValueError("the engine refused the batch")
        return [0.001, 0.002, 0.003, 0.010]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    """A tiny Keras classifier, its onnx and tflite conversions, labelled data and a corrupt artifact."""
    import modelkit
    from tests.helpers import make_tiny_keras

    d = tmp_path_factory.mktemp("measure")
    src = make_tiny_keras(d / "tiny.keras")
    out = {r.format: Path(r.path) for r in modelkit.convert(src, "onnx,tflite", out_dir=d, force=True)}
    rng = np.random.default_rng(3)
    x = rng.standard_normal((40, 4)).astype(np.float32)
    y = np.argmax(modelkit.load(src).predict({"x": x})["probs"], axis=-1)
    y[::3] = (y[::3] + 1) % 3  # a third wrong: accuracy ~0.67, not a trivial 1.0
    np.savez(d / "eval.npz", x=x, y=y)
    (d / "broken.onnx").write_bytes(b"not a model at all, just bytes")
    return {"keras": src, **out, "data": d / "eval.npz", "x": x, "y": y, "broken": d / "broken.onnx"}


def _cand(key: str, path: Path, threads: int | None, **extra: object) -> dict:
    return {"key": key, "path": str(path), "threads": threads, "status": "built", "reason": None, **extra}


@pytest.fixture(scope="module")
def run(models) -> dict:
    cands = [_cand("onnx-t1", models["onnx"], 1), _cand("tflite-t1", models["tflite"], 1),
             _cand("keras.predict", models["keras"], None, format="keras", mode="keras.predict"),
             _cand("broken-t1", models["broken"], 1), {"key": "tvm-t1", "status": "skipped", "path": None}]
    seen: list[tuple[int, int]] = []
    t0 = time.monotonic()
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("OMP_NUM_THREADS", raising=False)
        got = m.measure(cands, batch=4, data=str(models["data"]), rounds=3, round_seconds=0.05,
                        on_round=lambda done, total: seen.append((done, total)))
    return {"rows": {c["key"]: c for c in got}, "same": got is cands, "seen": seen, "s": time.monotonic() - t0}


@pytest.mark.slow
def test_each_built_candidate_and_the_baseline_is_measured_with_the_spec_keys(run) -> None:
    rows = run["rows"]
    assert run["same"] and run["seen"] == [(1, 3), (2, 3), (3, 3)]
    assert [rows[k]["status"] for k in ("onnx-t1", "tflite-t1", "keras.predict", "broken-t1", "tvm-t1")] == [
        "measured", "measured", "measured", "failed", "skipped"]
    for key in ("onnx-t1", "tflite-t1", "keras.predict"):
        r = rows[key]
        assert MEASURED <= set(r) and r["batch"] == 4 and r["load_s"] > 0
        assert len(r["rounds_ms"]) == 3 and r["calls"] >= 3 * 3
        assert r["p50_ms"] == pytest.approx(float(np.median(r["rounds_ms"])))
        assert r["ci95_ms"][0] <= r["p50_ms"] <= r["ci95_ms"][1] and r["p99_ms"] >= r["p50_ms"] > 0
    assert rows["onnx-t1"]["worker"]["frameworks"] == ["onnxruntime"]  # each engine in its own process
    assert len({rows[k]["worker"]["pid"] for k in ("onnx-t1", "tflite-t1", "keras.predict")}) == 3
    assert set(rows["tvm-t1"]) == {"key", "status", "path"}  # not built: left alone
    assert run["s"] < 60


@pytest.mark.slow
def test_accuracy_is_exactly_what_modelkit_load_gives_on_the_same_rows(run, models) -> None:
    import modelkit

    for key, fmt in (("onnx-t1", "onnx"), ("tflite-t1", "tflite"), ("keras.predict", "keras")):
        pred = np.argmax(modelkit.load(models[fmt]).predict({"x": models["x"]})["probs"], axis=-1)
        assert run["rows"][key]["accuracy"] == float(np.mean(pred == models["y"]))
        assert run["rows"][key]["worker"]["samples"] == 40
    assert 0.5 < run["rows"]["onnx-t1"]["accuracy"] < 0.8


def test_a_one_thread_candidate_runs_its_worker_with_one_thread(run) -> None:
    rows = run["rows"]
    assert set(rows["onnx-t1"]["worker"]["env"].values()) == {"1"} == set(rows["tflite-t1"]["worker"]["env"].values())
    assert rows["keras.predict"]["worker"]["env"]["OMP_NUM_THREADS"] is None  # threads None: the engine's default


def test_a_corrupt_artifact_fails_with_a_one_line_reason_naming_it(run, models) -> None:
    r = run["rows"]["broken-t1"]
    assert str(models["broken"]) in r["reason"] and "\n" not in r["reason"]
    assert "p50_ms" not in r


def test_a_deadline_already_passed_still_runs_exactly_one_round(models) -> None:
    (got,) = m.measure([_cand("onnx-t2", models["onnx"], 2)], batch=2, rounds=5, round_seconds=0.02,
                       deadline=time.monotonic() - 1)
    assert got["status"] == "measured" and len(got["rounds_ms"]) == 1 and got["accuracy"] is None
    assert got["worker"]["env"]["OMP_NUM_THREADS"] == "2" and "seeded" in got["worker"]["inputs"]


def test_workers_that_raise_or_die_mid_round_fail_alone(monkeypatch) -> None:
    monkeypatch.setattr(m, "PROBE", f"{__name__}:FakeProbe")
    cands = [_cand("dies", Path("die"), 1), _cand("raises", Path("raise"), 1), _cand("ok", Path("ok"), 1)]
    rows = {c["key"]: c for c in m.measure(cands, batch=1, rounds=2, round_seconds=0.01)}
    assert rows["dies"]["status"] == "failed"
    assert rows["dies"]["reason"].startswith("measuring dies died in its child process (exit code 7)")
    assert rows["raises"] == {**rows["raises"], "status": "failed",
                              "reason": "ValueError: the engine refused the batch"}
    ok = rows["ok"]
    assert ok["status"] == "measured" and ok["p50_ms"] == pytest.approx(2.5) and ok["rounds_ms"] == [2.5, 2.5]
    assert ok["calls"] == 8 and ok["load_s"] == 0.5 and ok["ci95_ms"][0] <= 2.5 <= ok["ci95_ms"][1]


def test_ctrl_c_stops_every_worker(monkeypatch) -> None:
    monkeypatch.setattr(m, "PROBE", f"{__name__}:FakeProbe")
    cands = [_cand(f"w{i}", Path("ok"), 1) for i in range(2)]

    def interrupt(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        m.measure(cands, batch=1, rounds=3, round_seconds=0.01, on_round=interrupt)
    for c in cands:
        with pytest.raises(ProcessLookupError):  # stopped and reaped, not left running
            os.kill(c["worker"]["pid"], 0)


def test_stats_of_known_rounds() -> None:
    rounds = [[0.001, 0.002, 0.003], [0.004, 0.005, 0.006], [0.002, 0.002, 0.100]]
    got = m.stats(rounds)
    assert got["rounds_ms"] == pytest.approx([2.0, 5.0, 2.0]) and got["p50_ms"] == pytest.approx(2.0)
    assert got["p99_ms"] == pytest.approx(float(np.percentile(np.ravel(rounds), 99)) * 1e3) and got["calls"] == 9
    lo, hi = got["ci95_ms"]
    assert 1.0 <= lo < 2.0 < hi <= 100.0
    assert m.stats(rounds) == got  # seeded
    assert m.stats([[0.003] * 5] * 4)["ci95_ms"] == pytest.approx([3.0, 3.0])


def test_the_interval_widens_with_the_drift_between_rounds() -> None:
    calls = list(np.linspace(0.001, 0.003, 101))
    steady = m.stats([calls] * 5)
    drifting = m.stats([[t + j * 0.0005 for t in calls] for j in range(5)])
    assert drifting["p50_ms"] == pytest.approx(3.0) and steady["p50_ms"] == pytest.approx(2.0)
    width = [s["ci95_ms"][1] - s["ci95_ms"][0] for s in (steady, drifting)]
    assert 0 < width[0] < 0.5 < width[1] < 2.5  # within-round noise only vs rounds 0.5 ms apart


def test_the_parent_imports_no_framework() -> None:
    code = ("import modelkit.optimization.measure, sys; "
            "print(__import__('json').dumps([m for m in ('tensorflow', 'torch', 'onnxruntime', 'keras', 'jax', "
            "'ai_edge_litert') if m in sys.modules]))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []
