"""Tuning on the device over TVM's RPC tracker: a real tracker and RPC server on 127.0.0.1 (free ports), a
short tuning run whose candidates the server loads and times, and the typed errors of a wrong address or
key. The slow test runs the same for edge-arm64 through a runtime-only aarch64 RPC server under qemu."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import modelkit
from modelkit.errors import RemoteDeviceError
from modelkit.targets.tvm import rpc
from tests.helpers import free_port, make_tiny_onnx, stop_group
from tests.helpers.cli import one_line_error

pytest.importorskip("tvm")
pytest.importorskip("tornado")  # TVM's tracker needs it

KEY = "testdev"
START_S = 120.0  # a loaded 2-core machine imports TVM slowly; qemu more so


def _wait(what: str, ready, procs: list[subprocess.Popen], logs: list[Path], timeout_s: float = START_S) -> None:
    """Poll ready() until it is true; fail (with the logs) when a process dies or timeout_s passes."""
    end = time.monotonic() + timeout_s
    while not ready():
        dead = [p for p in procs if p.poll() is not None]
        if dead or time.monotonic() > end:
            tails = "\n".join(f"{log.name}: {log.read_text()[-1500:]}" for log in logs)
            pytest.fail(f"{what}: {'a process exited' if dead else f'not ready in {timeout_s:.0f} s'}\n{tails}")
        time.sleep(0.2)


def _answers(port: int) -> bool:
    try:
        rpc.summary("127.0.0.1", port, 2.0)
        return True
    except (OSError, RemoteDeviceError):
        return False


def _registered(port: int, key: str = KEY) -> bool:
    try:
        return (rpc.summary("127.0.0.1", port, 2.0)["queue_info"].get(key) or {}).get("free", 0) > 0
    except OSError:
        return False


def _tracker_and(folder: Path, start_server) -> tuple[int, Path, list[subprocess.Popen]]:
    """A tracker on a free port, then the server start_server(port, log) starts, registered under KEY."""
    port = free_port()
    tlog, slog = folder / "tracker.log", folder / "server.log"
    procs = [subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port",
                               str(port), "--port-end", str(port + 1)], stdout=tlog.open("w"),
                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)]
    try:
        _wait("the tracker", lambda: _answers(port), procs, [tlog])
        procs.append(start_server(port, slog))
        _wait("the RPC server's registration", lambda: _registered(port), procs, [tlog, slog])
    except BaseException:
        for p in reversed(procs):
            stop_group(p, 10)
        raise
    return port, slog, procs


def _host_server(port: int, log: Path, key: str = KEY, env: dict[str, str] | None = None) -> subprocess.Popen:
    own = free_port()
    return subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_server", "--tracker", f"127.0.0.1:{port}", "--key",
                             key, "--host", "127.0.0.1", "--port", str(own), "--port-end", str(own + 1)],
                            stdout=log.open("w"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, env=env)


RUNTIME_ONLY = "runtime-only"  # a second device: TVM's runtime library alone, without the measuring functions


@pytest.fixture(scope="module")
def device(tmp_path_factory):
    import os

    folder = tmp_path_factory.mktemp("rpc")
    port, slog, procs = _tracker_and(folder, _host_server)
    try:
        log = folder / "runtime-only.log"
        procs.append(_host_server(port, log, RUNTIME_ONLY, {**os.environ, "TVM_USE_RUNTIME_LIB": "1"}))
        _wait("the runtime-only server", lambda: _registered(port, RUNTIME_ONLY), procs, [log])
        yield port, slog, folder
    finally:
        for p in reversed(procs):
            stop_group(p, 10)


def _loads(log: Path) -> int:
    """Candidates the RPC server loaded (TVM's server logs one line per module it loads)."""
    return log.read_text().count("load_module ")


def _measured(db_dir: str) -> list[float]:
    """The mean run time of every record in the database (1e10 marks a failed run in MetaSchedule)."""
    lines = (Path(db_dir) / "database_tuning_record.json").read_text().splitlines()
    return [float(np.mean(json.loads(line)[1][1])) for line in lines if line.strip()]


@pytest.mark.slow
def test_server_cpu_is_tuned_on_the_rpc_device(device):
    """`modelkit compile --trials 4 --rpc HOST:PORT --device-key KEY`: the server loads and times every candidate."""
    from modelkit.cli import main

    port, slog, folder = device
    onnx_path = make_tiny_onnx(folder / "tiny.onnx")
    before = _loads(slog)
    out = CliRunner().invoke(main, ["compile", str(onnx_path), "--target", "server-cpu", "--trials", "4", "--rpc",
                                    f"127.0.0.1:{port}", "--device-key", KEY, "--cache-dir", str(folder / "cache")])
    assert out.exit_code == 0, out.output[-3000:]
    assert (f"tuned on the device '{KEY}' via the RPC tracker at 127.0.0.1:{port}: the latencies are that device's "
            "(meaningless if it is emulated, e.g. under qemu)") in out.output
    library = folder / "tiny.server-cpu.tvm.so"
    manifest = json.loads(Path(f"{library}.modelkit.json").read_text())
    info = manifest["extra"]["tuning"]
    assert info["trials_run"] == 4 and info["device"]["key"] == KEY
    assert info["device"]["tracker"] == f"127.0.0.1:{port}" and info["device"]["free"] >= 1
    assert info["baseline"] == {"measured": 2, "failed": 0, "seconds": info["baseline"]["seconds"]}
    assert _loads(slog) - before == 4 + 2  # every candidate, and each task's default schedule, loaded there
    runs = _measured(info["cache_dir"])
    assert len(runs) == 4 and all(0 < r < 1.0 for r in runs)  # measured (seconds), not failed (1e10)
    assert len(_measured(Path(info["cache_dir"]) / "baseline")) == 2  # the default schedules, timed there
    assert manifest["parity"]["ok"] and manifest["extra"]["verified"] == "parity"
    x = np.random.default_rng(5).random((1, 4), dtype=np.float32)
    np.testing.assert_allclose(modelkit.load(library).predict(x)["probs"],
                               modelkit.load(onnx_path).predict(x)["probs"], atol=1e-5)




@pytest.mark.slow
def test_unknown_key_is_a_one_line_cli_error(device, tiny_onnx):
    port, _, _ = device
    t0 = time.monotonic()
    line = one_line_error(["compile", str(tiny_onnx), "--tune", "--rpc", f"127.0.0.1:{port}", "--device-key", "nope"])
    free = f"{RUNTIME_ONLY}, {KEY}"
    assert f"the RPC tracker at 127.0.0.1:{port} has no device with key 'nope' (free keys there: {free})" in line
    assert f"python -m tvm.exec.rpc_server --tracker 127.0.0.1:{port} --key nope" in line
    assert time.monotonic() - t0 < 30  # no wait for a key nobody registered, no conversion, no tuning
    assert not list(tiny_onnx.parent.glob("*.tvm.so"))


@pytest.mark.slow
def test_a_device_that_measures_nothing_is_an_error(device):
    """A runtime-only TVM server loads every candidate but cannot fill its inputs: no library passes for tuned."""
    port, _, folder = device
    onnx_path = make_tiny_onnx(folder / "nothing.onnx")
    with pytest.raises(RemoteDeviceError) as err:
        modelkit.compile(onnx_path, "server-cpu", trials=4, cache_dir=folder / "cache-runtime-only",
                         rpc=f"127.0.0.1:{port}", device_key=RUNTIME_ONLY)
    text = str(err.value)
    assert text.startswith(f"all 4 candidates failed on the device '{RUNTIME_ONLY}' via the RPC tracker at "
                           f"127.0.0.1:{port}, so nothing was tuned: AttributeError: Unable to find function "
                           '"tvm.contrib.random.random_fill_for_measure"'), text
    assert "--load-library <site-packages>/tvm/lib/libtvm_runtime_extra.so" in text
    assert not (folder / "nothing.server-cpu.tvm.so").exists()


def test_unreachable_tracker_is_a_one_line_cli_error(tiny_onnx):
    port = free_port()  # nothing listens there
    line = one_line_error(["compile", str(tiny_onnx), "--target", "server-cpu", "--trials", "4", "--rpc",
                            f"127.0.0.1:{port}", "--device-key", KEY])
    assert f"cannot reach the TVM RPC tracker at 127.0.0.1:{port} (ConnectionRefusedError" in line
    assert f"python -m tvm.exec.rpc_tracker --host 0.0.0.0 --port {port}" in line
    assert f"--tracker 127.0.0.1:{port} --key {KEY}" in line


@pytest.mark.parametrize("args, message", [
    (["--tune", "--rpc", "board:port", "--device-key", KEY], "bad RPC tracker address 'board:port': use HOST:PORT"),
    (["--tune", "--rpc", "board:70000", "--device-key", KEY], "bad RPC tracker address 'board:70000'"),
    (["--tune", "--rpc", "board:9190"], "--rpc board:9190 needs --device-key KEY"),
    (["--tune", "--device-key", KEY], "--device-key needs --rpc HOST:PORT"),
    (["--rpc", "board:9190", "--device-key", KEY], "--rpc measures tuning candidates on the device: add --tune"),
])
def test_bad_rpc_options_are_one_line_cli_errors(tiny_onnx, args, message):
    assert message in one_line_error(["compile", str(tiny_onnx), *args])


def test_a_port_that_is_not_a_tracker_is_named():
    import socket
    import threading

    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def answer() -> None:  # not TVM's tracker magic
            conn, _ = listener.accept()
            with conn:
                conn.recv(4)
                conn.sendall(b"HTTP")

        worker = threading.Thread(target=answer, daemon=True)
        worker.start()
        with pytest.raises(RemoteDeviceError, match=f"^127.0.0.1:{port} answered, but it is not a TVM RPC tracker$"):
            rpc.check(rpc.device(f"127.0.0.1:{port}", KEY), timeout_s=5)
        worker.join(5)


def test_parse_address():
    assert rpc.parse_address("192.168.1.20:9190") == ("192.168.1.20", 9190)
    assert rpc.parse_address("[::1]:9190") == ("::1", 9190)
    assert rpc.parse_address(" board.local:1 ") == ("board.local", 1)
    for bad in ("9190", "board:", ":9190", "board:0", "a:b:1", ""):
        with pytest.raises(RemoteDeviceError, match="bad RPC tracker address"):
            rpc.parse_address(bad)


@pytest.mark.slow
def test_edge_arm64_is_tuned_through_an_emulated_aarch64_rpc_server(tmp_path, capfd):
    """The runtime-only aarch64 TVM under qemu-aarch64 as the device: candidates cross-linked here, loaded
    and timed there (qemu's timings, meaningless for speed); the library then runs there with parity."""
    from modelkit.targets.tvm import emulate

    why = emulate.available()
    if why is not None:
        pytest.skip(f"no emulated aarch64 environment: {why}")
    port, slog, procs = _tracker_and(tmp_path, lambda p, log: rpc.serve_emulated("127.0.0.1", p, KEY,
                                                                                 log=log.open("w")))
    try:
        onnx_path = make_tiny_onnx(tmp_path / "tiny.onnx")
        result = modelkit.compile(onnx_path, "edge-arm64", trials=4, cache_dir=tmp_path / "cache",
                                  rpc=f"127.0.0.1:{port}", device_key=KEY)
    finally:
        for p in reversed(procs):
            stop_group(p, 10)
    assert result.tuning["trials_run"] == 4 and result.tuning["device"]["key"] == KEY
    assert _loads(slog) == 4 + result.tuning["baseline"]["measured"]  # every aarch64 candidate (and default
    assert result.tuning["baseline"]["measured"] == 2  # schedule) loaded by the emulated runtime
    runs = _measured(result.tuning["cache_dir"])
    assert len(runs) == 4 and all(0 < r < 1.0 for r in runs)
    assert result.verified == "parity-under-qemu-aarch64" and result.parity["ok"]
    assert "under an emulator such as qemu they say nothing about speed" in capfd.readouterr().err
