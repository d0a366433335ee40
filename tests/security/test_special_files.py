"""FIFOs and devices where a model file is expected (issue 14): refused before they are opened, by format
detection, `modelkit.load` (even with format=), `modelkit inspect`, `modelkit serve` and hot-loading, and
never blocking the server's event loop: the other models keep answering."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from modelkit.errors import FormatError
from tests.helpers import add_version, call, make_tiny_onnx, v2_request
from tests.helpers.load import QUIET

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX FIFOs")
ENV = {**os.environ, **QUIET}


@pytest.fixture
def fifos():
    """make(path) -> a FIFO; at the end, any reader still blocked on one is released (opened for writing)."""
    made: list[Path] = []

    def make(path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(path)
        made.append(path)
        return path

    yield make
    for p in made:
        try:
            os.close(os.open(p, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass  # no reader: nothing is blocked on it


def bounded(fn, seconds: float = 20.0):
    """fn() in a daemon thread; its result or exception, or AssertionError when it does not return."""
    out: dict = {}

    def run() -> None:
        try:
            out["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            out["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"{fn} blocked for {seconds} s"
    if "error" in out:
        raise out["error"]
    return out["value"]


def test_detect_and_load_refuse_a_fifo_without_opening_it(tmp_path, fifos):
    import modelkit

    fifo = fifos(tmp_path / "x.onnx")
    with pytest.raises(FormatError, match="not a regular file .a FIFO."):
        bounded(lambda: modelkit.detect(fifo))
    with pytest.raises(FormatError, match="not a regular file .a FIFO."):
        bounded(lambda: modelkit.load(fifo))
    with pytest.raises(FormatError, match="not a regular file .a FIFO."):
        bounded(lambda: modelkit.load(fifo, format="onnx"))
    link = tmp_path / "link.onnx"
    link.symlink_to(fifo)
    with pytest.raises(FormatError, match="not a regular file"):
        bounded(lambda: modelkit.detect(link))


def test_load_dev_zero_with_a_format_is_refused_at_once(tmp_path):
    """In a child with a memory limit: without the check, onnxruntime reads /dev/zero until memory ends."""
    code = ("import modelkit\n"
            "try:\n    modelkit.load('/dev/zero', format='onnx')\n"
            "except modelkit.errors.FormatError as e:\n    print('TYPED', e)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=ENV,
                          cwd=tmp_path, preexec_fn=_limit_memory)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "TYPED /dev/zero: not a regular file (a character device)" in proc.stdout, proc.stdout


def _limit_memory() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (4 * 1024**3, 4 * 1024**3))


@pytest.mark.parametrize("command", ["inspect", "serve"])
def test_cli_refuses_a_fifo_with_one_line(tmp_path, fifos, command):
    fifo = fifos(tmp_path / "x.onnx")
    args = [sys.executable, "-m", "modelkit", command, str(fifo)] + (["--port", "0"] if command == "serve" else [])
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=tmp_path)
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 2, (proc.returncode, err[-2000:])
    assert [line for line in err.splitlines() if line.strip()] == [
        f"error: {fifo}: not a regular file (a FIFO); refusing to read it as a model"], err[-2000:]


def test_server_with_a_fifo_model_keeps_answering(serve, tmp_path, fifos):
    """A repository with a good model and a FIFO'd one: health and inference of the good model answer
    within a bounded time, the FIFO'd version is reported as failed, and so is one hot-loaded later."""
    repo = tmp_path / "repo"
    fifos(repo / "bad" / "1" / "x.onnx")  # "bad" sorts before "good": it is loaded first
    good = repo / "good" / "1"
    good.mkdir(parents=True)
    make_tiny_onnx(good / "model.onnx")
    server = serve(repo, ready=False)
    port = server.port
    end = time.monotonic() + 90
    while call(port, "GET", "/v2/models/good/ready", timeout=10)[0] != 200:
        assert time.monotonic() < end, server.text()
        time.sleep(0.1)
    for _ in range(5):
        start = time.monotonic()
        assert call(port, "GET", "/v2/health/live", timeout=10) == (200, {"live": True})
        status, resp = call(port, "POST", "/v2/models/good/infer", v2_request([[1, 2, 3, 4]]), timeout=10)
        assert status == 200 and resp["outputs"][0]["shape"] == [1, 3], resp
        assert time.monotonic() - start < 10
    index = call(port, "POST", "/v2/repository/index", timeout=10)[1]
    bad = [r for r in index if r["name"] == "bad"]
    assert len(bad) == 1 and bad[0]["state"] == "UNAVAILABLE", index
    assert "x.onnx: not a regular file (a FIFO)" in bad[0]["reason"], bad
    assert call(port, "GET", "/v2/health/ready", timeout=10)[0] == 503  # honest: "bad" has no version
    # hot-load: a new model whose artifact is a FIFO, and a new version of the good model next to a FIFO
    fifos(repo / "late" / "1" / "model.onnx")
    status, resp = call(port, "POST", "/v2/repository/models/late/load", timeout=20)
    assert status == 400 and "not a regular file (a FIFO)" in resp["error"], resp
    add_version_dir = repo / "good" / "2"
    add_version_dir.mkdir()
    fifos(add_version_dir / "model.onnx")
    status, resp = call(port, "POST", "/v2/repository/models/good/load", timeout=20)
    assert status == 400 and "not a regular file" in resp["error"] and resp["default_version"] == "1", resp
    assert call(port, "POST", "/v2/models/good/infer", v2_request([[1, 2, 3, 4]]), timeout=10)[0] == 200
    assert call(port, "GET", "/v2/health/live", timeout=10)[0] == 200


def test_single_model_repository_version_swap_still_works_with_fifo_neighbour(serve, tmp_path, fifos):
    """A FIFO next to the one artifact of a version (say a log pipe) is skipped, not opened."""
    repo = tmp_path / "repo"
    v1 = add_version(repo, 1)
    fifos(v1 / "events.pipe")
    server = serve(repo)
    status, resp = call(server.port, "POST", "/v2/models/tiny/infer", v2_request([[1, 2, 3, 4]]), timeout=10)
    assert status == 200 and resp["model_version"] == "1", resp
