"""Run one benchmark worker in a fresh Python process (modelkit._child's protocol), relaying its
progress lines to this process's sys.stderr as they come (also when sys.stderr is not a real file).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from .. import _child
from .._backend import QUIET_ENV
from ..errors import ModelkitError


def run_child(func: str, kwargs: dict[str, Any], backend: str | None = None,
              timeout: float | None = None) -> Any:
    """Call `func` ("pkg.mod:name") with JSON kwargs in a child; typed errors are raised again here."""
    env = dict(os.environ)
    env.update({k: env.get(k, v) for k, v in QUIET_ENV.items()})
    env.setdefault("PYTHONWARNINGS", "ignore")
    if backend is not None:
        env["KERAS_BACKEND"] = backend
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    with tempfile.TemporaryDirectory(prefix="modelkit-bench-") as td:
        out = Path(td) / "result.json"
        proc = subprocess.Popen([sys.executable, "-m", "modelkit._child", str(out)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        killed: list[bool] = []

        def kill() -> None:
            killed.append(True)
            proc.kill()

        timer = threading.Timer(timeout, kill) if timeout else None
        if timer:
            timer.start()
        try:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(json.dumps({"func": func, "kwargs": kwargs}))
            proc.stdin.close()
            for line in proc.stdout:  # progress, relayed live
                sys.stderr.write(line)
                sys.stderr.flush()
            code = proc.wait()
        finally:
            if timer:
                timer.cancel()
        if killed:
            raise ModelkitError(f"benchmark of {kwargs.get('artifact')} did not finish within {timeout:.0f} s")
        if not out.is_file():
            raise ModelkitError(f"the benchmark child for {kwargs.get('artifact')} died (exit code {code}) "
                                "without a result; see its output above")
        payload = json.loads(out.read_text())
    if "error" in payload:
        raise _child._rebuild(payload["error"])
    return payload["result"]
