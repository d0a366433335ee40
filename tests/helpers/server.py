"""Real `modelkit serve` processes on 127.0.0.1 free ports and plain HTTP clients, with bounded waits."""
from __future__ import annotations

import http.client as httpclient
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from modelkit.serving.metrics import parse as parse_metrics

from .models import make_tiny_onnx

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def http(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
         timeout: float = 30.0) -> tuple[int, dict[str, str], bytes]:
    conn = httpclient.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def call(port: int, method: str, path: str, obj: object = None, timeout: float = 30.0) -> tuple[int, object]:
    body = None if obj is None else json.dumps(obj).encode()
    status, _, data = http(port, method, path, body, {"Content-Type": "application/json"}, timeout)
    return status, json.loads(data) if data else None


def metrics(port: int) -> dict[str, float]:
    status, _, data = http(port, "GET", "/metrics")
    assert status == 200
    return parse_metrics(data.decode())


def v2_request(x, name: str = "x", datatype: str = "FP32") -> dict:
    import numpy as np

    x = np.asarray(x)
    return {"inputs": [{"name": name, "shape": list(x.shape), "datatype": datatype, "data": x.ravel().tolist()}]}


class ServerProcess:
    def __init__(self, args: list[str], log: Path, cwd: Path):
        self.log = log
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "0", "PYTHONWARNINGS": "ignore"}
        with open(log, "wb") as fh:
            self.proc = subprocess.Popen([sys.executable, "-m", "modelkit", "serve", "--host", HOST, "--port", "0",
                                          *args], stdout=fh, stderr=subprocess.STDOUT, cwd=cwd, env=env)
        self.port = self._wait_for("listening on http://127.0.0.1:", 60)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def _wait_for(self, marker: str, timeout: float) -> int:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            text = self.text()
            if marker in text:
                return int(text.split(marker, 1)[1].split()[0])
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{text}")
            time.sleep(0.05)
        raise AssertionError(f"server did not start in {timeout} s:\n{self.text()}")

    def wait_ready(self, timeout: float = 60.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if http(self.port, "GET", "/v2/health/ready")[0] == 200:
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.text()}")
            time.sleep(0.05)
        raise AssertionError(f"server not ready in {timeout} s:\n{self.text()}")

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


def tiny_expected(x, weight_scale: float = 1.0):
    """What make_tiny_onnx computes, in numpy: softmax(x @ W + b) with the same seeded weights."""
    import numpy as np

    rng = np.random.default_rng(0)
    w = (rng.standard_normal((4, 3)) * weight_scale).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    z = np.asarray(x, np.float32) @ w + b
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def add_version(repo: Path, version: int, weight_scale: float = 1.0, content: bytes | None = None) -> Path:
    """Write NAME/VERSION atomically: build under a hidden name, then rename."""
    tmp = repo / "tiny" / f".v{version}.partial"
    tmp.mkdir(parents=True)
    if content is None:
        make_tiny_onnx(tmp / "model.onnx", weight_scale)
    else:
        (tmp / "model.onnx").write_bytes(content)
    final = repo / "tiny" / str(version)
    os.rename(tmp, final)
    return final
