"""Tuning on the device: MetaSchedule measures candidates on a board registered with TVM's RPC tracker.

Candidates are built here (cross-linked into a shared library for a cross target, so the device needs
only the TVM runtime, no compiler) and uploaded to a free device the tracker holds under the key, which
loads and times them. Before any tuning work the tracker is asked, within a bounded time, whether it
answers and has a free device with that key; a typed RemoteDeviceError says what to run otherwise.
`serve_emulated()` starts a runtime-only aarch64 RPC server under qemu-aarch64 (emulate.py's
environment): it proves the plumbing for arm64 targets, but its timings are qemu's, not a board's.
"""
from __future__ import annotations

import json
import re
import socket
import struct
import subprocess
import time
from dataclasses import dataclass
from typing import Any

from ...errors import RemoteDeviceError, first_line

CHECK_TIMEOUT_S = 10.0     # the tracker must answer, and a device with the key be free, within this
SESSION_TIMEOUT_S = 120    # one candidate's session on the device: upload, load, time (slow boards, qemu)
POLL_S = 0.25
TRACKER_MAGIC, SUCCESS, SUMMARY = 0x2F271, 0, 6  # TVM's tracker protocol (tvm/rpc/base.py), without importing TVM


@dataclass(frozen=True)
class Device:
    """A device to measure on: the tracker's address and the key the device registered under; `cxx` is
    the cross compiler that links candidates for it (None: this machine's)."""

    host: str
    port: int
    key: str
    cxx: str | None = None

    def __str__(self) -> str:
        return f"'{self.key}' via the RPC tracker at {self.host}:{self.port}"


def parse_address(text: str) -> tuple[str, int]:
    """'HOST:PORT' (an IPv6 host in brackets: '[::1]:9190') -> (host, port)."""
    m = re.fullmatch(r"\s*(\[[^\]]+\]|[^:\s]+):(\d{1,5})\s*", str(text or ""))
    port = int(m.group(2)) if m else 0
    if not m or not 0 < port < 65536:
        raise RemoteDeviceError(f"bad RPC tracker address '{text}': use HOST:PORT, e.g. 192.168.1.20:9190")
    return m.group(1).strip("[]"), port


def device(address: str, key: str | None, cxx: str | None = None) -> Device:
    """The Device for `--rpc HOST:PORT --device-key KEY`."""
    host, port = parse_address(address)
    if not key or not str(key).strip():
        raise RemoteDeviceError(f"--rpc {address} needs --device-key KEY: the key the device's RPC server "
                                "registered under (python -m tvm.exec.rpc_server --tracker ... --key KEY)")
    return Device(host, port, str(key).strip(), cxx)


def summary(host: str, port: int, timeout_s: float = CHECK_TIMEOUT_S) -> dict[str, Any]:
    """The tracker's summary ({"queue_info": {key: {"free", "pending"}}, "server_info": [...]}), bounded in
    time (TVM's own client retries a refused connection for 60 s); imports no TVM."""
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        sock.settimeout(timeout_s)
        sock.sendall(struct.pack("<i", TRACKER_MAGIC))
        if struct.unpack("<i", _recv(sock, 4))[0] != TRACKER_MAGIC:
            raise RemoteDeviceError(f"{host}:{port} answered, but it is not a TVM RPC tracker")
        request = json.dumps([SUMMARY]).encode()
        sock.sendall(struct.pack("<i", len(request)) + request)
        code, value = json.loads(_recv(sock, struct.unpack("<i", _recv(sock, 4))[0]))
        if code != SUCCESS:
            raise RemoteDeviceError(f"the RPC tracker at {host}:{port} refused a summary ({code})")
        return value


def _recv(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionResetError("the connection closed")
        data += chunk
    return data


def check(dev: Device, timeout_s: float = CHECK_TIMEOUT_S) -> dict[str, Any]:
    """Check that the tracker answers and holds a device with dev.key, waiting (at most timeout_s) for one to
    be free; return the key's queue entry ({"free", "pending", "total"}), else raise RemoteDeviceError naming
    what to run."""
    server = f"python -m tvm.exec.rpc_server --tracker {dev.host}:{dev.port} --key {dev.key}"
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            info = summary(dev.host, dev.port, max(0.5, deadline - time.monotonic()))
        except RemoteDeviceError:
            raise
        except (OSError, ValueError, struct.error) as exc:  # refused, unreachable, timed out, garbled
            raise RemoteDeviceError(
                f"cannot reach the TVM RPC tracker at {dev.host}:{dev.port} ({type(exc).__name__}: "
                f"{str(exc) or 'no answer'}); start it with: python -m tvm.exec.rpc_tracker --host 0.0.0.0 "
                f"--port {dev.port}, and on the device: {server}") from exc
        total = sum(1 for s in info.get("server_info", []) if s.get("key") == f"server:{dev.key}")
        queue = dict(info.get("queue_info", {}).get(dev.key) or {"free": 0, "pending": 0})
        if queue.get("free", 0) > 0:
            return {**queue, "total": total}
        if not total:  # not registered at all (a busy device stays listed): no point in waiting
            keys = sorted(k for k, q in info.get("queue_info", {}).items() if q.get("free"))
            raise RemoteDeviceError(f"the RPC tracker at {dev.host}:{dev.port} has no device with key '{dev.key}' "
                                    f"(free keys there: {', '.join(keys) or 'none'}); on the device run: {server}")
        if time.monotonic() >= deadline:
            break
        time.sleep(POLL_S)
    raise RemoteDeviceError(f"the RPC tracker at {dev.host}:{dev.port} has {total} device(s) with key "
                            f"'{dev.key}', none free for {timeout_s:.0f} s (another tuning run holds them?)")


def with_cores(tvm_target: Any, dev: Device) -> Any:
    """tvm_target with "num-cores" (MetaSchedule needs it to split parallel loops; a cross target has none)
    taken from the device: the threads its TVM runtime uses, asked over one RPC session."""
    import tvm

    if tvm_target.attrs.get("num-cores"):
        return tvm_target
    session = _session(dev, 60)
    cores = int(session.get_function("runtime.NumThreads")())
    return tvm.target.Target({**dict(tvm_target.export()), "num-cores": max(1, cores)})


def _session(dev: Device, timeout_s: int) -> Any:
    from tvm.s_tir.meta_schedule.runner import RPCConfig

    try:
        return RPCConfig(dev.host, dev.port, dev.key, session_timeout_sec=timeout_s).connect_server()
    except (ValueError, RuntimeError, OSError) as exc:
        raise RemoteDeviceError(f"no RPC session with {dev}: {first_line(exc)}") from exc


def make_runner(ms: Any, dev: Device, session_timeout_s: int = SESSION_TIMEOUT_S) -> Any:
    """MetaSchedule's RPCRunner measuring on dev (one session per candidate)."""
    config = ms.runner.RPCConfig(tracker_host=dev.host, tracker_port=dev.port, tracker_key=dev.key,
                                 session_timeout_sec=int(session_timeout_s))
    return ms.runner.RPCRunner(rpc_config=config,
                               evaluator_config=ms.runner.EvaluatorConfig(number=3, repeat=1, min_repeat_ms=40))


def failure_watch(ms: Any) -> Any:
    """A measure callback counting the device's valid and failed runs (of candidates that built), keeping
    the first failure's message: a device that measures nothing must not pass for a tuned one."""
    from tvm.ir.utils import derived_object

    @derived_object
    class Watch(ms.measure_callback.PyMeasureCallback):
        def __init__(self) -> None:
            super().__init__()
            self.valid, self.failed, self.first_error = 0, 0, ""

        def apply(self, sched: Any, task_id: int, candidates: Any, builds: Any, runs: Any) -> None:
            for build, run in zip(builds, runs):
                if build.error_msg is not None:
                    continue
                if run.error_msg is None:
                    self.valid += 1
                else:
                    self.failed += 1
                    self.first_error = self.first_error or str(run.error_msg)

    return Watch()


def raise_if_nothing_measured(watch: Any, dev: Device) -> None:
    """RemoteDeviceError when every candidate that reached the device failed there."""
    if watch.valid or not watch.failed:
        return
    lines = [ln.strip() for ln in watch.first_error.splitlines() if ln.strip()]
    why = lines[-1] if lines else "no message"
    hint = ""
    if "random_fill_for_measure" in watch.first_error:
        hint = ("; the device's TVM runtime lacks the measuring functions of libtvm_runtime_extra.so: run the "
                "server with the full apache-tvm package, or add --load-library "
                "<site-packages>/tvm/lib/libtvm_runtime_extra.so to a runtime-only one")
    raise RemoteDeviceError(f"all {watch.failed} candidates failed on the device {dev}, so nothing was tuned: "
                            f"{why[:300]}{hint}")


# An RPC server for the emulated aarch64 Python (emulate.py): runtime-only TVM has the measuring helpers
# (random fill, time evaluator) in libtvm_runtime_extra.so, which it does not load itself; and each session
# is served in this process, because a forked child segfaults under qemu-user and nothing can exec an
# aarch64 python there without binfmt_misc (TVM's server forks one per session, its launcher execs).
_EMULATED_SERVER = r"""
import ctypes, os, socket, sys
import tvm
from tvm.rpc import server
from tvm.support import utils
ctypes.CDLL(os.path.join(os.path.dirname(tvm.__file__), "lib", "libtvm_runtime_extra.so"), ctypes.RTLD_GLOBAL)

def serving(sock, addr, opts, load_library):
    work, old = utils.tempdir(), os.getcwd()
    os.chdir(work.path)
    server.logger.info("session from %s", addr)
    try:
        server._server_env(load_library, work)
        server._ffi_api.ServerLoop(sock.detach())
    finally:
        os.chdir(old)
        work.remove()

server._serving = serving
host, tracker_host, tracker_port, key = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
sock = socket.socket()
sock.bind((host, 0))
sock.listen(1)
server._listen_loop(sock, sock.getsockname()[1], key, (tracker_host, tracker_port), None, host)
"""


def serve_emulated(tracker_host: str, tracker_port: int, key: str, log: Any = subprocess.DEVNULL,
                   host: str = "127.0.0.1") -> subprocess.Popen:
    """Start an aarch64 RPC server under qemu-aarch64 registering with the tracker as `key`; the caller
    stops it (terminate). Its timings are an emulator's: they prove nothing about a board's speed."""
    from . import emulate

    why = emulate.available()
    if why is not None:
        raise RemoteDeviceError(f"cannot start an emulated aarch64 RPC server: {why}")
    d = emulate.env_dir()
    return subprocess.Popen(["qemu-aarch64", "-L", "/", str(d / "python3.11-aarch64"), "-c", _EMULATED_SERVER,
                             host, tracker_host, str(tracker_port), key],
                            env=emulate.runtime_env(), stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)


if __name__ == "__main__":
    import sys

    if len(sys.argv) == 4 and sys.argv[1] == "serve-emulated":
        server = serve_emulated(*parse_address(sys.argv[2]), sys.argv[3], log=None)
        try:
            server.wait()
        except KeyboardInterrupt:  # it runs in its own session: stop it here
            server.terminate()
            server.wait(30)
    else:
        print("usage: python -m modelkit.targets.tvm.rpc serve-emulated TRACKER_HOST:PORT KEY", file=sys.stderr)
