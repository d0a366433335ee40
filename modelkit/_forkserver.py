"""Warm fork servers for modelkit._child (Linux): a child forked from a process that has already imported Keras with
its backend starts in ~0.5 s of CPU instead of the 3-5 s a new Python takes to import TensorFlow or torch, which is
most of a small conversion's cost (docs/performance.md, "A child's start").

`launch(...)` returns a Popen-like `Forked` for a child forked by the server of that child's environment, or None,
and the caller spawns a new Python as before. None when: MODELKIT_FORK_SERVER=0; not Linux; not the main thread (a
server dies with the thread that started it, PR_SET_PDEATHSIG); the first child of an environment (a one-off child
would pay the server's start for nothing: the second starts it); or the server cannot be started or has gone.
Environments are told apart by every variable but the per-child ones (TMPDIR, PYTHONPATH, MODELKIT_IMPORTS, which
the forked child sets, with the folder and umask). Resource limits are those the parent had when the server started.
The server side is modelkit._forkserver_side.
"""
from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from typing import IO, Any

ENV_SWITCH = "MODELKIT_FORK_SERVER"  # "0": every child is a new Python
PRELOAD_ENV = "MODELKIT_PRELOAD"  # the Keras backend a server imports before forking (child_env sets it)
PER_CHILD = frozenset({"TMPDIR", "PYTHONPATH", "MODELKIT_IMPORTS"})
START_S = 300.0  # a server's imports, bounded (TensorFlow under load: ~20 s)
REPLY_S = 60.0  # a fork's answer, bounded

_lock = threading.Lock()
_uses: dict[frozenset, int] = {}
_servers: dict[frozenset, _Server] = {}
_owner = [os.getpid()]  # a fork of this process (multiprocessing) inherits the dicts, not the servers' readers


class Forked:
    """A child forked by a server: the part of subprocess.Popen that modelkit._child uses. Its exit code comes
    from the server, which is its parent."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.stdin: IO[str] | None = None  # set by launch(), which may get the child after its exit code
        self.stdout: IO[str] | None = None
        self.args = f"forked child {pid}"
        self.returncode: int | None = None
        self._done = threading.Event()

    def _exited(self, code: int) -> None:
        self.returncode = code
        self._done.set()

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._done.wait(timeout):
            raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class _Server:
    """The parent's end of one server: requests go out under a lock; a reader thread hands out fork answers and
    exit codes. A server that goes away (idle, killed) fails what waits on it; its children died with it."""

    def __init__(self, env: dict[str, str]) -> None:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", "modelkit._forkserver_side", str(theirs.fileno())],
                                         env=env, pass_fds=(theirs.fileno(),), start_new_session=True,
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)
        finally:
            theirs.close()
        self.sock = mine
        self.gone = False
        self._send_lock = threading.Lock()
        self._answers: dict[int, queue.Queue] = {}
        self._children: dict[int, Forked] = {}
        self._next = 0
        mine.settimeout(START_S)
        try:
            ready = json.loads(mine.recv(4096) or b"{}").get("ready")
        except (OSError, ValueError):
            ready = False
        if not ready:
            self.close()
            raise OSError("the fork server did not start")
        mine.settimeout(None)
        threading.Thread(target=self._read, daemon=True).start()

    def fork(self, req: dict[str, Any], fds: list[int], stdin: IO[str], stdout: IO[str] | None) -> Forked | None:
        answer: queue.Queue = queue.Queue()
        with self._send_lock:
            if self.gone:
                return None
            self._next += 1
            req = {**req, "id": self._next}
            self._answers[self._next] = answer
            try:
                socket.send_fds(self.sock, [json.dumps(req).encode()], fds)
            except OSError:
                return None
        try:
            child = answer.get(timeout=REPLY_S)
        except queue.Empty:  # a server that stalls is ended (with any child it forked late): a new Python runs it
            self.close()
            child = None
        if child is not None:
            child.stdin, child.stdout = stdin, stdout
        return child

    def _read(self) -> None:
        while True:
            try:
                msg = self.sock.recv(4096)
            except OSError:
                msg = b""
            if not msg:
                break
            got = json.loads(msg)
            if "id" in got:
                child = self._children[got["pid"]] = Forked(got["pid"])
                self._answers.pop(got["id"]).put(child)
            else:
                self._children.pop(got["pid"])._exited(got["exit"])
        with self._send_lock:
            self.gone = True
        for answer in self._answers.values():
            answer.put(None)
        for child in self._children.values():
            child._exited(-signal.SIGKILL)  # its children die with it (PR_SET_PDEATHSIG)
        self.close()

    def close(self) -> None:
        self.gone = True
        with contextlib.suppress(OSError):
            self.sock.close()
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)


def _enabled() -> bool:
    return (os.environ.get(ENV_SWITCH, "1") != "0" and sys.platform.startswith("linux")
            and threading.current_thread() is threading.main_thread())


def _server(env: dict[str, str]) -> _Server | None:
    """The server of env's environment, started at its second use; None before, or when it cannot start."""
    key = frozenset((k, v) for k, v in env.items() if k not in PER_CHILD)
    with _lock:
        if _owner[0] != os.getpid():  # the servers are the parent process's: this one starts its own
            _owner[0] = os.getpid()
            _uses.clear()
            _servers.clear()
        _uses[key] = _uses.get(key, 0) + 1
        server = _servers.get(key)
        if server is not None and not server.gone:
            return server
        if _uses[key] < 2:
            return None
        try:
            server = _Server({k: v for k, v in env.items() if k != "TMPDIR"})
        except OSError:
            _uses[key] = -10**9  # not again for this environment: every child is spawned
            return None
        _servers[key] = server
        return server


def launch(mode: str, arg: str, env: dict[str, str], streams: dict[str, Any], reply_fd: int | None = None) -> Any:
    """A child forked for `mode` ("run": modelkit._child_side's _main(arg); "serve": _serve(reply_fd)) with env, its
    stdout and stderr as Popen's `streams` say (DEVNULL, a descriptor, or PIPE joined with STDOUT); or None."""
    if not _enabled():
        return None
    server = _server(env)
    if server is None:
        return None
    stdin_r, stdin_w = os.pipe()
    opened = [stdin_r]
    out_r = None
    if streams["stdout"] == subprocess.DEVNULL:
        out = err = os.open(os.devnull, os.O_WRONLY)
        opened.append(out)
    elif streams["stdout"] == subprocess.PIPE:
        out_r, out = os.pipe()
        err = out
        opened.append(out)
    else:
        out, err = streams["stdout"], streams["stderr"]
    fds = [stdin_r, out, err, *([reply_fd] if reply_fd is not None else [])]
    stdin = os.fdopen(stdin_w, "w", encoding="utf-8")
    stdout = os.fdopen(out_r, encoding="utf-8") if out_r is not None else None
    try:
        from ._atomic import _umask

        req = {"mode": mode, "arg": arg, "env": env, "cwd": os.getcwd(), "umask": _umask()}  # a server keeps its own
        child = server.fork(req, fds, stdin, stdout)
    finally:
        for fd in opened:
            os.close(fd)  # the child holds its copies
    if child is None:
        stdin.close()
        if stdout is not None:
            stdout.close()
    return child
