"""Tuning: a short MetaSchedule run on the tiny model, its database cached and reused without new trials."""
import json
from pathlib import Path

import numpy as np
import pytest

import modelkit
from modelkit.targets import tuning
from tests.conftest import make_tiny_onnx

pytest.importorskip("tvm")


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    from modelkit.targets import compile

    folder = tmp_path_factory.mktemp("tuned")
    onnx_path = make_tiny_onnx(folder / "tiny.onnx")
    cache = folder / "cache"
    first = compile(onnx_path, target="server-cpu", trials=4, cache_dir=cache)
    return first, onnx_path, cache


def test_short_tuning_run_records_trials(tuned):
    first, onnx_path, cache = tuned
    info = first.tuning
    assert info["reused"] is False and info["trials_run"] == 4 and info["records_before"] == 0
    db = Path(info["cache_dir"])
    assert db.parent == cache and tuning.count_records(db) == 4
    assert info["tasks"] == 2 and info["best_latency_us"] > 0
    assert first.batch == 1 and first.parity["ok"] and {c["batch"] for c in first.parity["cases"]} == {1}
    m = modelkit.load(first.path)
    x = np.random.default_rng(3).random((1, 4), dtype=np.float32)
    np.testing.assert_allclose(m.predict(x)["probs"], modelkit.load(onnx_path).predict(x)["probs"], atol=1e-5)


def test_second_compile_reuses_the_database_without_trials(tuned):
    from modelkit.targets import compile

    first, onnx_path, cache = tuned
    db = Path(first.tuning["cache_dir"])
    records = (db / tuning.RECORDS).read_bytes()
    second = compile(onnx_path, target="server-cpu", trials=4, cache_dir=cache, force=True)
    assert second.tuning["reused"] is True and second.tuning["trials_run"] == 0
    assert (db / tuning.RECORDS).read_bytes() == records  # not one new trial
    assert second.parity["ok"]
    manifest = json.loads(Path(second.path + ".modelkit.json").read_text())
    assert manifest["extra"]["tuning"]["reused"] is True and manifest["chain"][-1]["options"]["trials"] == 4


def test_cache_key_separates_models_targets_and_batches():
    base = tuning.cache_key("a" * 64, {"kind": "llvm"}, 1, "0.27")
    assert base == tuning.cache_key("a" * 64, {"kind": "llvm"}, 1, "0.27")
    assert len({base, tuning.cache_key("b" * 64, {"kind": "llvm"}, 1, "0.27"),
                tuning.cache_key("a" * 64, {"kind": "llvm", "mcpu": "x"}, 1, "0.27"),
                tuning.cache_key("a" * 64, {"kind": "llvm"}, 2, "0.27")}) == 4


def test_cache_dir_follows_modelkit_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("MODELKIT_CACHE_DIR", str(tmp_path))
    assert tuning.cache_root() == tmp_path / "tvm"


def test_record_count_ignores_a_line_cut_by_an_interrupt(tmp_path):
    (tmp_path / tuning.RECORDS).write_bytes(b'[1, {"a": 1}]\n[2, {"b": 2}]\n[3, {"c"')
    assert tuning.count_records(tmp_path) == 2


@pytest.mark.slow
def test_budgeted_tuning_of_the_cnn_stops_and_improves(converted, tmp_path):
    from modelkit.targets import compile

    onnx_path = converted["tensorflow"]["onnx"]
    result = compile(onnx_path, out=tmp_path, budget="90s", cache_dir=tmp_path / "cache")
    assert result.tuning["budget_spent"] or result.tuning["trials_run"] > 0
    assert result.tuning["seconds"] < 90 + 300  # stops after the round that crosses the budget
    assert result.parity["ok"]


@pytest.mark.slow
def test_long_tuning_of_the_cnn(converted, tmp_path):
    from modelkit.targets import compile

    result = compile(converted["tensorflow"]["onnx"], out=tmp_path, trials=64, cache_dir=tmp_path / "cache")
    assert result.tuning["trials_run"] == 64 and result.parity["ok"]


@pytest.mark.slow
def test_ctrl_c_keeps_the_records_and_leaves_no_library(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    onnx_path = make_tiny_onnx(tmp_path / "tiny.onnx")
    cache = tmp_path / "cache"
    proc = subprocess.Popen([sys.executable, "-m", "modelkit", "compile", str(onnx_path), "--trials", "400",
                             "--cache-dir", str(cache)], start_new_session=True)
    deadline = time.monotonic() + 600
    records = 0
    while time.monotonic() < deadline and records < 4:
        time.sleep(2)
        records = sum(tuning.count_records(d) for d in cache.glob("*")) if cache.exists() else 0
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole process group
    proc.wait(timeout=120)
    assert proc.returncode != 0
    kept = sum(tuning.count_records(d) for d in cache.glob("*"))
    assert kept >= 4
    assert not (tmp_path / "tiny.server-cpu.tvm.so").exists()  # atomic: no half-written library
    from modelkit.targets import compile

    again = compile(onnx_path, trials=4, cache_dir=cache)  # fewer trials than kept: reused, none run
    assert again.tuning["reused"] and again.tuning["trials_run"] == 0
