"""The server side of modelkit._forkserver: a warm process that has imported Keras with one backend (and the engines
its children use) and forks a child per request, so each child starts in ~0.5 s of CPU instead of 3-5 s.

`python -m modelkit._forkserver_side FD`: FD is this end of a SOCK_SEQPACKET socket pair. The server preloads, says
{"ready": true}, then per request ({"id", "mode", "arg", "env", "cwd"} with its stdin, stdout, stderr and, for
"serve", the reply pipe as passed descriptors) forks a child and answers {"id", "pid"}; when a child exits it sends
{"pid", "exit"} (Popen's returncode: negative for a signal). The server is single-threaded (a fork copies only the
calling thread, so no other Python thread may hold a lock then) and dies with its parent, ends when the socket
closes, and ends by itself after IDLE_S without a request or a child. A child does what a spawned one does
(modelkit._child_side), in its own session, dying with the server.
"""
from __future__ import annotations

import contextlib
import importlib
import json
import os
import select
import signal
import socket
import sys
import tempfile
from typing import Any

from . import _child_side

IDLE_S = 60.0  # a server nobody asked for that long ends (its imports hold ~0.4-0.7 GB); the next use starts one
# What children of each backend import anyway, loaded once here (a failed import is the child's to report). A
# conversion child runs every hop of its backend, so these already share a process there (ExecuTorch: ~1.8 s).
PRELOAD = {"tensorflow": ("tf2onnx", "onnx", "onnxruntime"),
           "torch": ("onnx", "onnxruntime", "executorch.exir", "executorch.runtime",
                     "executorch.backends.xnnpack.partition.xnnpack_partitioner"),
           "jax": ("onnx", "onnxruntime")}


def _preload() -> None:
    from ._forkserver import PRELOAD_ENV

    backend = os.environ.get(PRELOAD_ENV)  # not KERAS_BACKEND, which a child of no backend may inherit
    if backend not in PRELOAD:
        return
    from ._backend import import_keras

    try:
        import_keras(backend)
    except Exception:  # noqa: BLE001  # the child reports it
        return
    for name in PRELOAD[backend]:
        with contextlib.suppress(Exception):
            importlib.import_module(name)


def _send(sock: socket.socket, payload: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):  # the parent is gone: this server ends at the next receive
        sock.send(json.dumps(payload).encode())


def _reap(children: set[int], sock: socket.socket) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        children.discard(pid)
        _send(sock, {"pid": pid, "exit": os.waitstatus_to_exitcode(status)})


def _become_child(req: dict[str, Any], fds: list[int], closing: list[int]) -> int:
    """In the forked child: the request's descriptors, environment, folder and session, then the work."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for fd in closing:
        os.close(fd)
    os.setsid()  # as Popen(start_new_session=True): a terminal's Ctrl-C reaches the parent, which passes it on
    for target, fd in enumerate(fds[:3]):
        os.dup2(fd, target)
    for fd in set(fds[:3]):
        if fd > 2:
            os.close(fd)
    sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115  # the request's stdin, read by the work
    os.environ.clear()
    os.environ.update(req["env"])
    tempfile.tempdir = None  # TMPDIR is this child's scratch folder (tempfile caches the first one it found)
    for path in reversed([p for p in req["env"].get("PYTHONPATH", "").split(os.pathsep) if p]):
        if path not in sys.path:
            sys.path.insert(0, path)  # the user's folders, as a spawned child's PYTHONPATH puts them
    os.chdir(req["cwd"])
    os.umask(req["umask"])
    return _child_side._serve(fds[3]) if req["mode"] == "serve" else _child_side._main(req["arg"])


def _fork(req: dict[str, Any], fds: list[int], closing: list[int]) -> int:
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 70
        try:
            code = _become_child(req, fds, closing)
        except BaseException:  # noqa: BLE001  # reported like a spawned child's crash: no result, this exit code
            import traceback

            traceback.print_exc()
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)
    return pid


def main(fd: int) -> None:
    _child_side._die_with_parent()
    sock = socket.socket(fileno=fd)
    _preload()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so that the wake-up descriptor is written
    signal.set_wakeup_fd(wake_w)
    _send(sock, {"ready": True})
    children: set[int] = set()
    while True:
        ready, _, _ = select.select([sock, wake_r], [], [], IDLE_S)
        if wake_r in ready:
            os.read(wake_r, 4096)
        _reap(children, sock)
        if sock in ready:
            try:
                msg, fds, _, _ = socket.recv_fds(sock, 1 << 20, 8)
            except OSError:
                break
            if not msg:
                break  # the parent closed its end: it is exiting
            req = json.loads(msg)
            try:
                pid = _fork(req, fds, [sock.fileno(), wake_r, wake_w])
            finally:
                for passed in fds:
                    os.close(passed)
            children.add(pid)
            _send(sock, {"id": req["id"], "pid": pid})
        elif not ready and not children:
            break  # idle
    os._exit(0)


if __name__ == "__main__":
    main(int(sys.argv[1]))
