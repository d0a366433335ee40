"""Run one function in a child Python process with a chosen Keras backend.

The Keras backend is fixed per process, and TensorFlow, torch and JAX are heavy; work that needs a
particular backend runs here so the parent stays light and any backend's .keras converts. Typed
modelkit errors raised in the child are raised again, with the same type, in the parent.

Protocol: the parent sends {"func": "pkg.mod:name", "kwargs": {...}} as JSON on stdin; the child
writes {"result": ...} or {"error": {...}} as JSON to the file named by argv[1]. The child's stdout
and stderr pass through, so progress shows.
"""
from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

from . import errors
from ._backend import QUIET_ENV, check_backend


def run(func: str, kwargs: dict[str, Any], backend: str | None = None, timeout: float | None = None,
        quiet: bool = False, interrupt_grace: float = 15.0) -> Any:
    """Call `func` ("pkg.module:function") with JSON-able kwargs in a child process; return its result.

    The child runs in its own session, so a terminal's Ctrl-C reaches only this process. On Ctrl-C the
    child is sent one SIGINT and given interrupt_grace seconds to stop cleanly (a conversion deletes its
    partial output, training saves a checkpoint, tuning keeps its records) and report a typed error,
    which is raised here; a second Ctrl-C, or the grace running out, kills it (interrupt_grace=0: at once).
    """
    env = dict(os.environ)
    env.update({k: env.get(k, v) for k, v in QUIET_ENV.items()})
    env.setdefault("PYTHONWARNINGS", "ignore")  # framework deprecation chatter drowns the progress lines
    if backend is not None:
        env["KERAS_BACKEND"] = check_backend(backend)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    with tempfile.TemporaryDirectory(prefix="modelkit-child-") as td:
        out = Path(td) / "result.json"
        req = json.dumps({"func": func, "kwargs": kwargs})
        sink = _stderr_fd()
        if quiet:
            streams: dict[str, Any] = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        elif sink is not None:
            streams = {"stdout": sink, "stderr": sink}
        else:  # stderr is not a real file (CliRunner, notebooks): capture, then forward
            streams = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT}
        proc = subprocess.Popen([sys.executable, "-m", "modelkit._child", str(out)], stdin=subprocess.PIPE,
                                text=True, env=env, start_new_session=True, **streams)
        try:
            captured, interrupted = _communicate(proc, req, timeout, interrupt_grace)
        except subprocess.TimeoutExpired as exc:
            _kill(proc)
            raise errors.ConversionError(f"{func} did not finish within {timeout:.0f} s") from exc
        if captured:
            sys.stderr.write(captured)
        if not out.is_file():
            if interrupted:
                raise KeyboardInterrupt
            raise errors.ConversionError(f"{func} died in its child process (exit code {proc.returncode}) "
                                         "without a result; see the output above")
        payload = json.loads(out.read_text())
    if "error" in payload:
        raise _rebuild(payload["error"])
    return payload["result"]


def _communicate(proc: subprocess.Popen, req: str, timeout: float | None, grace: float) -> tuple[str | None, bool]:
    """Send the request and wait for the child, handling Ctrl-C as run() describes.

    Returns (captured output, whether the child was asked to stop).
    """
    try:
        assert proc.stdin is not None
        proc.stdin.write(req)  # the request is small; the child reads it before anything else
        proc.stdin.close()
        proc.stdin = None  # so that communicate() can be called again after an interrupt
        return proc.communicate(timeout=timeout)[0], False
    except KeyboardInterrupt:
        if grace <= 0:
            _kill(proc)
            raise
    print(f"\n[modelkit] Ctrl-C: asking the work to stop cleanly (up to {grace:.0f} s; Ctrl-C again to kill it)",
          file=sys.stderr, flush=True)
    proc.send_signal(signal.SIGINT)
    try:
        return proc.communicate(timeout=grace)[0], True
    except (KeyboardInterrupt, subprocess.TimeoutExpired):
        _kill(proc)
        raise KeyboardInterrupt from None


def _kill(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.communicate()


def _stderr_fd() -> int | None:
    try:
        sys.stderr.flush()
        return sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
        return None


def _rebuild(err: dict[str, Any]) -> BaseException:
    if err.get("type") == "KeyboardInterrupt":  # the child was stopped and did not say more
        return KeyboardInterrupt()
    cls = getattr(errors, err.get("type", ""), None)
    if isinstance(cls, type) and issubclass(cls, errors.ModelkitError):
        exc = cls.__new__(cls)
        Exception.__init__(exc, err["message"])
        if issubclass(cls, errors.ParityError):
            exc.report = err.get("report")
        exc.child_traceback = err.get("traceback")
        return exc
    exc = errors.ConversionError(f"{err.get('type')}: {err.get('message')}")
    exc.child_traceback = err.get("traceback")
    return exc


def _die_with_parent() -> None:
    """Linux: get SIGKILL when the parent dies, so killing `modelkit convert` stops its work too
    (an orphaned child would otherwise finish and write the artifact the user interrupted)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


def _main(out_path: str) -> int:
    _die_with_parent()
    import logging

    logging.getLogger().setLevel(logging.ERROR)  # libraries' root-logger advice drowns the progress lines
    req = json.loads(sys.stdin.read())
    mod_name, fn_name = req["func"].split(":")
    try:
        fn = getattr(importlib.import_module(mod_name), fn_name)
        payload: dict[str, Any] = {"result": fn(**req["kwargs"])}
    except BaseException as exc:  # report every failure to the parent, typed
        payload = {"error": {"type": type(exc).__name__, "message": str(exc) or type(exc).__name__,
                             "traceback": traceback.format_exc(),
                             "report": _jsonable(getattr(exc, "report", None))}}
    Path(out_path).write_text(json.dumps(payload, default=str))
    return 0


def _jsonable(obj: Any) -> Any:
    return obj.to_dict() if hasattr(obj, "to_dict") else obj


if __name__ == "__main__":
    code = _main(sys.argv[1])
    # The result file is written and closed; skip interpreter teardown (TensorFlow's shutdown alone
    # costs ~3 s per conversion child). Flush what the child printed first.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
