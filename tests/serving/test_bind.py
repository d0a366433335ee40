"""Binding (issue 14): a port in use is a one-line typed error naming the port (exit 2, no traceback);
--port 0 binds a free port and prints the one it got."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

from tests.helpers import HOST, call, make_tiny_onnx

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "0", "PYTHONWARNINGS": "ignore"}


def test_port_in_use_is_one_line_error_exit_2(tmp_path):
    model = make_tiny_onnx(tmp_path / "tiny.onnx")
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "modelkit", "serve", str(model), "--port", str(port)],
                              capture_output=True, text=True, timeout=120, env=ENV, cwd=tmp_path)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [f"error: cannot listen on 127.0.0.1:{port}: the port is already in use; pick another "
                     "with --port N, or --port 0 for a free one"], proc.stderr[-2000:]
    assert "listening" not in proc.stdout


def test_port_0_binds_a_free_port_and_prints_it(serve, tmp_path):
    model = make_tiny_onnx(tmp_path / "tiny.onnx")
    a, b = serve(model), serve(model)  # the fixture passes --port 0 and reads the printed address
    assert a.port != b.port and 0 not in (a.port, b.port)
    for server in (a, b):
        assert f"modelkit serve: listening on http://127.0.0.1:{server.port}\n" in server.text()
        assert call(server.port, "GET", "/v2/health/live") == (200, {"live": True})
        with socket.socket() as s:  # it really is that process's port: binding it again fails
            try:
                s.bind((HOST, server.port))
                s.listen()
                bound = True
            except OSError:
                bound = False
        assert not bound
