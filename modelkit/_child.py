"""The one way modelkit runs work in a child Python process (conversion hops, training, search, benchmark
workers, distributed-training workers).

The Keras backend is fixed per process, and TensorFlow, torch and JAX are heavy; work that needs a
particular backend runs in a child so the parent stays light and any backend's .keras converts. Typed
modelkit errors raised in the child are raised again, with the same type, in the parent; anything else
arrives as the caller's error class (WorkerError unless it names another).

Protocol: the parent sends {"func": "pkg.mod:name", "kwargs": {...}} as JSON on stdin; the child
writes {"result": ...} or {"error": {...}} as JSON to the file named by argv[1]. The child's stdout
and stderr go to the parent's stderr: passed through when that is a real file, relayed line by line as
they come when it is not (CliRunner, notebooks) or while a progress bar is drawn here (through the bar, which
they would otherwise tear: modelkit._progress), so progress shows either way.

- `run(...)`: one child, waited for, with a timeout and Ctrl-C handling; returns its result.
- `start(...)`: a child left running (several side by side: distributed training); `Child.result()`.
- `serve(...)`: a persistent child holding one object (a loaded model being timed) that answers requests one
  by one: `Worker.ready()`, `Worker.call(method, kwargs, timeout)`, `Worker.stop()`. Requests go as JSON lines
  on the child's stdin; replies come back as JSON lines on a private pipe (not stdout, which engines print
  to), so the child's own output is treated as above and never corrupts a reply. Every wait is bounded; a
  child that dies, or does not answer in time (then killed), is the caller's error class naming `what`.

This module is the parent's side; the child runs modelkit._child_side, and errors cross by modelkit._child_errors.
"""
from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from . import _progress, _sigint, errors
from ._backend import QUIET_ENV, check_backend
from ._child_errors import rebuild
from ._forkserver import PRELOAD_ENV


def child_env(backend: str | None = None, extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment for a child: quiet engines, `backend` as KERAS_BACKEND, modelkit importable,
    and the user's modules that registered custom Keras objects here named for the child to import."""
    from .keras_io.custom import ENV_IMPORTS, registered_imports, with_imports

    env = dict(os.environ)
    env.update({k: env.get(k, v) for k, v in QUIET_ENV.items()})
    env.setdefault("PYTHONWARNINGS", "ignore")  # framework deprecation chatter drowns the progress lines
    if backend is not None:
        env["KERAS_BACKEND"] = check_backend(backend)
        env[PRELOAD_ENV] = backend  # what a fork server of this environment imports before forking (_forkserver)
    env.update(extra or {})
    specs, folders = registered_imports()
    merged = with_imports(specs)
    if merged is not None:
        env[ENV_IMPORTS] = merged
    paths = [str(Path(__file__).resolve().parent.parent), *folders]
    env["PYTHONPATH"] = os.pathsep.join(paths + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


@dataclass
class Child:
    """A started child: its process, the file it writes its result to, and what to call it in errors."""
    proc: Any  # subprocess.Popen, or a _forkserver.Forked
    out: Path
    what: str
    error: type[errors.ModelkitError]
    relay: threading.Thread | None = None

    def failed(self) -> bool:
        """Whether the child has exited with an error (a non-zero exit code or an error in its result)."""
        if self.proc.poll() is None:
            return False
        return bool(self.proc.returncode) or not self.out.is_file() or "error" in json.loads(self.out.read_text())

    def result(self, interrupted: bool = False) -> Any:
        """The result of the exited child, or its error raised again here, typed."""
        self._join_relay()
        if not self.out.is_file():
            if interrupted:
                raise KeyboardInterrupt
            raise self.error(f"{self.what} died in its child process (exit code {self.proc.returncode}) without "
                             "a result; see the output above")
        payload = json.loads(self.out.read_text())
        if "error" in payload:
            raise rebuild(payload["error"], self.error)
        return payload["result"]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._join_relay()

    def _join_relay(self) -> None:
        if self.relay is not None:  # bounded: a grandchild could hold the pipe open after the child exits
            self.relay.join(timeout=5)


def start(func: str, kwargs: dict[str, Any], out: Path, env: dict[str, str] | None = None, quiet: bool = False,
          error: type[errors.ModelkitError] = errors.WorkerError, what: str | None = None,
          fresh: bool = False) -> Child:
    """Start `func` ("pkg.module:function") with JSON-able kwargs in a child that writes its result to `out`.

    The child runs in its own session, so a terminal's Ctrl-C reaches only this process (see run()). fresh: a new
    Python, never a fork of a warm server (a measurement whose memory and imports must be the work's own).
    """
    proc = _launch("run", str(out), env if env is not None else child_env(), _streams(quiet), fresh=fresh)
    assert proc.stdin is not None
    proc.stdin.write(json.dumps({"func": func, "kwargs": kwargs}))  # small: the child reads it first
    proc.stdin.close()
    return Child(proc, out, what or func, error, _start_relay(proc))


def _launch(mode: str, arg: str, env: dict[str, str], streams: dict[str, Any], reply_fd: int | None = None,
            fresh: bool = False) -> Any:
    """The child process (its stdin a pipe to write the request to, text): forked from a warm server of its
    environment when there is one and not `fresh` (modelkit._forkserver), else a new Python; in its own session."""
    from . import _forkserver

    forked = None if fresh else _forkserver.launch(mode, arg, env, streams, reply_fd)
    if forked is not None:
        return forked
    argv = [sys.executable, "-m", "modelkit._child_side", *(["--serve", arg] if mode == "serve" else [arg])]
    return subprocess.Popen(argv, stdin=subprocess.PIPE, text=True, env=env, start_new_session=True,
                            pass_fds=(reply_fd,) if reply_fd is not None else (), **streams)


def _streams(quiet: bool) -> dict[str, Any]:
    """Where a child's stdout and stderr go: nowhere (quiet), this process's stderr, or a pipe to relay."""
    sink = None if _progress.live() else _stderr_fd()
    if quiet:
        return {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    if sink is not None:
        return {"stdout": sink, "stderr": sink}
    return {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT}


def _start_relay(proc: Any) -> threading.Thread | None:
    if proc.stdout is None:
        return None
    relay = threading.Thread(target=_relay, args=(proc.stdout,), daemon=True)
    relay.start()
    return relay


def run(func: str, kwargs: dict[str, Any], backend: str | None = None, timeout: float | None = None,
        quiet: bool = False, interrupt_grace: float = 15.0, error: type[errors.ModelkitError] = errors.WorkerError,
        what: str | None = None, fresh: bool = False) -> Any:
    """Call `func` ("pkg.module:function") with JSON-able kwargs in a child process; return its result.

    A child that runs past `timeout` seconds is killed (`error`, naming `what`). On Ctrl-C the child is sent
    one SIGINT and given interrupt_grace seconds to stop cleanly (a conversion deletes its partial output,
    training saves a checkpoint, tuning keeps its records) and report a typed error, which is raised here;
    a second Ctrl-C, or the grace running out, kills it (interrupt_grace=0: at once). fresh: as start() says.
    """
    with tempfile.TemporaryDirectory(prefix="modelkit-child-") as td:
        scratch = Path(td) / "tmp"  # the child's temporary files, removed with td even when it is killed or
        scratch.mkdir()  # skips its exit handlers (os._exit below): a shared SavedModel folder leaked per child
        env = child_env(backend, {"TMPDIR": str(scratch)})
        early: list[int] = []  # a Ctrl-C while the child starts is held, then handled as one while it runs
        with _sigint.handling(lambda *_: early.append(1)):
            child = start(func, kwargs, Path(td) / "result.json", env, quiet, error, what, fresh)
        try:
            interrupted = _wait(child, timeout, interrupt_grace, bool(early))
        except subprocess.TimeoutExpired as exc:
            child.kill()
            raise error(f"{child.what} did not finish within {timeout:.0f} s") from exc
        return child.result(interrupted)


def _wait(child: Child, timeout: float | None, grace: float, ctrl_c: bool = False) -> bool:
    """Wait for the child, handling Ctrl-C (`ctrl_c`: one came already) as run() describes; whether it was asked
    to stop."""
    try:
        if ctrl_c:
            raise KeyboardInterrupt
        child.proc.wait(timeout=timeout)
        return False
    except KeyboardInterrupt:
        if grace <= 0:
            child.kill()
            raise
    print(f"\n[modelkit] Ctrl-C: asking the work to stop cleanly (up to {grace:.0f} s; Ctrl-C again to kill it)",
          file=sys.stderr, flush=True)
    child.proc.send_signal(signal.SIGINT)
    try:
        child.proc.wait(timeout=grace)
        return True
    except (KeyboardInterrupt, subprocess.TimeoutExpired):
        child.kill()
        raise KeyboardInterrupt from None


@dataclass
class Worker:
    """A served child (see serve()): one object living in a child process, called request by request."""
    proc: Any  # subprocess.Popen, or a _forkserver.Forked
    replies: queue.Queue
    what: str
    error: type[errors.ModelkitError]
    threads: tuple[threading.Thread | None, ...] = ()
    started: bool = False

    def ready(self, timeout: float | None = None) -> None:
        """Wait until the child has built its object (raises what building it raised, or `error`)."""
        if not self.started:
            self.started = True
            self._reply(timeout)

    def call(self, method: str, kwargs: dict[str, Any] | None = None, timeout: float | None = None) -> Any:
        """Call `method(**kwargs)` on the child's object and return its JSON-able result, waiting at most
        `timeout` seconds (then the child is killed); its errors are raised here, typed as run() does."""
        self.ready(timeout)
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps({"method": method, "kwargs": kwargs or {}}) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):  # the child is gone (ValueError: stdin closed here)
            self._died()
        return self._reply(timeout)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, grace: float = 2.0) -> None:
        """End the child: its stdin is closed (it returns), then it is killed after `grace` seconds."""
        with contextlib.suppress(OSError):  # BrokenPipeError: the child is gone
            self.proc.stdin.close()  # type: ignore[union-attr]
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for t in self.threads:  # bounded: a grandchild could hold a pipe open after the child exits
            if t is not None:
                t.join(timeout=5)

    def _reply(self, timeout: float | None) -> Any:
        try:
            line = self.replies.get(timeout=timeout)
        except queue.Empty:
            self.stop(grace=0)
            raise self.error(f"{self.what} did not answer within {timeout:.0f} s") from None
        if line is None:
            self._died()
        payload = json.loads(line)
        if "error" in payload:
            raise rebuild(payload["error"], self.error)
        return payload["result"]

    def _died(self) -> None:
        self.stop(grace=5)  # its reply pipe is closed: it is exiting (one that lingers is killed)
        raise self.error(f"{self.what} died in its child process (exit code {self.proc.returncode}); see the "
                         "output above")


def serve(factory: str, kwargs: dict[str, Any], env: dict[str, str] | None = None, quiet: bool = False,
          error: type[errors.ModelkitError] = errors.WorkerError, what: str | None = None,
          fresh: bool = False) -> Worker:
    """Start a child that builds `factory(**kwargs)` ("pkg.module:callable", e.g. a class) and then answers
    Worker.call() requests on the object it built, until Worker.stop(). Returns at once; Worker.ready()
    waits for the object. The child runs in its own session (a terminal's Ctrl-C reaches this process only:
    stop the worker in a `finally`). fresh: as start() says."""
    read_fd, write_fd = os.pipe()
    try:
        proc = _launch("serve", str(write_fd), env if env is not None else child_env(), _streams(quiet), write_fd,
                       fresh)
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)  # the child holds its copy: end of file here means the child is gone
    assert proc.stdin is not None
    proc.stdin.write(json.dumps({"func": factory, "kwargs": kwargs}) + "\n")
    proc.stdin.flush()
    replies: queue.Queue = queue.Queue()
    reader = threading.Thread(target=_read_replies, args=(os.fdopen(read_fd, encoding="utf-8"), replies), daemon=True)
    reader.start()
    return Worker(proc, replies, what or factory, error, (reader, _start_relay(proc)))


def _read_replies(stream: IO[str], replies: queue.Queue) -> None:
    """Queue the child's reply lines as they come; None at end of file (the child exited)."""
    with stream:
        for line in stream:
            replies.put(line)
    replies.put(None)


def _relay(stream: IO[str]) -> None:
    """Copy a child's output lines to sys.stderr as they come (sys.stderr has no file descriptor, or a progress
    bar is drawn on it)."""
    for line in stream:
        _progress.write(line)
    stream.close()


def _stderr_fd() -> int | None:
    try:
        sys.stderr.flush()
        return sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
        return None
