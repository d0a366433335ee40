"""Killing a conversion leaves no artifact; the next run cleans up and succeeds."""
import os
import signal
import subprocess
import sys
import time

import pytest

import modelkit
from tests.helpers import cli_process, ctrl_c


def _partials(folder):
    return [p for p in folder.iterdir() if p.name.endswith(".partial")] if folder.exists() else []


@pytest.mark.slow
def test_sigkill_mid_conversion_leaves_nothing_and_next_run_works(cnn_tf, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "modelkit", "convert", str(cnn_tf), "--to", "onnx",
                             "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "MODELKIT_TEST_HOP_PAUSE": "600"})  # killed mid-hop, however fast
    deadline = time.monotonic() + 90
    while not _partials(out) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _partials(out), "the conversion never started writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    child_pid = int(_partials(out)[0].name.split(".")[-3])
    for _ in range(200):  # the child dies with its parent (PR_SET_PDEATHSIG)
        try:
            os.kill(child_pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the conversion child outlived its killed parent")
    assert not (out / "cnn_tf.onnx").exists() and not (out / "cnn_tf.onnx.modelkit.json").exists()
    (r,) = modelkit.convert(cnn_tf, "onnx", out_dir=out)
    assert r.parity["ok"] and (out / "cnn_tf.onnx").is_file()
    assert _partials(out) == []


def test_ctrl_c_mid_conversion_stops_the_child_cleanly(cnn_tf, tmp_path):
    """A terminal's Ctrl-C reaches only the CLI (the child has its own session); the CLI forwards one
    SIGINT, so the child deletes its partial output itself before it exits."""
    out = tmp_path / "out"
    out.mkdir()
    # the hop holds 600 s once its partial exists: the Ctrl-C lands mid-hop however fast the conversion is
    with cli_process("convert", str(cnn_tf), "--to", "onnx", "--out", str(out),
                     env={"MODELKIT_TEST_HOP_PAUSE": "600"}) as proc:
        deadline = time.monotonic() + 90
        while not _partials(out) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _partials(out), "the conversion never started writing"
        child_pid = int(_partials(out)[0].name.split(".")[-3])
        text = ctrl_c(proc, timeout=60)
    assert proc.returncode == 1 and "Aborted!" in text and "asking the work to stop cleanly" in text
    with pytest.raises(ProcessLookupError):
        os.kill(child_pid, 0)
    assert list(out.iterdir()) == []  # no artifact, no manifest, no partial folder
