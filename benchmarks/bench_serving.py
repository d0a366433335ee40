"""Serving throughput and latency: `modelkit serve` (with and without dynamic batching) vs TorchServe.

The same model on both: an MLP 64 -> 256 -> ReLU -> 10 -> softmax built in torch, traced to TorchScript
for TorchServe (packaged with `modelkit package --for torchserve`), and written as ONNX with the very same
weights for `modelkit serve` (onnxruntime). One request = one row, JSON over HTTP/1.1 keep-alive.

Loopback only (127.0.0.1, free ports); every cell is bounded in requests and seconds; every server is
stopped at the end. The load generator is one asyncio process (one connection per concurrent client).

    .venv/bin/python benchmarks/bench_serving.py [--requests 2000] [--seconds 15] [--concurrency 1,8,32,64]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

HOST = "127.0.0.1"
BIN = Path(sys.executable).parent
D_IN, D_HID, D_OUT = 64, 256, 10


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def build_models(work: Path) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    """TorchScript (+ manifest) and an ONNX file with identical weights; a probe input and its output."""
    import onnx
    import torch
    from onnx import TensorProto, helper, numpy_helper

    from modelkit import manifest
    from modelkit.spec import Signature, TensorSpec

    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(D_IN, D_HID), torch.nn.ReLU(), torch.nn.Linear(D_HID, D_OUT),
                              torch.nn.Softmax(-1)).eval()
    ts_path = work / "mlp.torchscript.pt"
    torch.jit.trace(mlp, torch.zeros(2, D_IN)).save(str(ts_path))
    sig = Signature((TensorSpec("x", (None, D_IN)),), (TensorSpec("probs", (None, D_OUT)),))
    manifest.write(ts_path, manifest.Manifest(format="torchscript", signature=sig.to_dict()))
    w1, b1 = mlp[0].weight.detach().numpy().T.copy(), mlp[0].bias.detach().numpy()
    w2, b2 = mlp[2].weight.detach().numpy().T.copy(), mlp[2].bias.detach().numpy()
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h0"]), helper.make_node("Add", ["h0", "b1"], ["h1"]),
             helper.make_node("Relu", ["h1"], ["h2"]), helper.make_node("MatMul", ["h2", "W2"], ["l0"]),
             helper.make_node("Add", ["l0", "b2"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["probs"], axis=-1)]
    weights = [numpy_helper.from_array(a, n) for a, n in ((w1, "W1"), (b1, "b1"), (w2, "W2"), (b2, "b2"))]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", D_IN])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", D_OUT])], weights)
    onnx_path = work / "mlp.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(onnx_path))
    x = np.random.default_rng(0).standard_normal((1, D_IN)).astype(np.float32)
    with torch.no_grad():
        y = mlp(torch.from_numpy(x)).numpy()
    return ts_path, onnx_path, x, y


# ----------------------------------------------------------------------------------------- load generator

async def _client(port: int, request: bytes, deadline: float, budget: list[int], lat: list[float],
                  errors: list[int]) -> None:
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        while budget[0] > 0 and time.perf_counter() < deadline:
            budget[0] -= 1
            t0 = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
            await reader.readexactly(length)
            lat.append(time.perf_counter() - t0)
            if not head.startswith(b"HTTP/1.1 200"):
                errors.append(int(head[9:12]))
    finally:
        writer.close()


def run_load(port: int, path: str, body: bytes, headers: dict[str, str], concurrency: int, requests: int,
             seconds: float) -> dict[str, float]:
    head = "".join(f"{k}: {v}\r\n" for k, v in {"Host": HOST, "Content-Type": "application/json",
                                                  "Content-Length": str(len(body)), **headers}.items())
    request = f"POST {path} HTTP/1.1\r\n{head}\r\n".encode() + body
    lat: list[float] = []
    errors: list[int] = []

    async def main() -> float:
        budget = [requests]
        start = time.perf_counter()
        await asyncio.gather(*(_client(port, request, start + seconds, budget, lat, errors)
                               for _ in range(concurrency)))
        return time.perf_counter() - start

    # warm-up: a few requests per connection, not measured
    asyncio.run(_warm(port, request, concurrency))
    elapsed = asyncio.run(main())
    a = np.array(lat) * 1000
    return {"n": len(lat), "rps": len(lat) / elapsed, "p50": float(np.percentile(a, 50)),
            "p99": float(np.percentile(a, 99)), "errors": len(errors)}


async def _warm(port: int, request: bytes, concurrency: int) -> None:
    await asyncio.gather(*(_client(port, request, time.perf_counter() + 5, [3], [], []) for _ in range(concurrency)))


# ------------------------------------------------------------------------------------------------ servers

def wait_http(url: str, headers: dict[str, str], timeout: float, proc: subprocess.Popen) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout} s")


def start_modelkit(onnx_path: Path, work: Path, max_batch: int) -> tuple[subprocess.Popen, int]:
    port = free_port()
    log = open(work / f"modelkit_b{max_batch}.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "modelkit", "serve", f"mlp={onnx_path}", "--host", HOST,
                             "--port", str(port), "--max-batch-size", str(max_batch), "--max-delay-ms", "2",
                             "--queue-size", "1024", "--log-level", "warning"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    wait_http(f"http://{HOST}:{port}/v2/health/ready", {}, 60, proc)
    return proc, port


def start_torchserve(ts_path: Path, work: Path, workers: int) -> tuple[subprocess.Popen, int, str]:
    from modelkit.serving.packagers import package

    ports = {k: free_port() for k in ("inference", "management", "metrics", "grpc_inference", "grpc_management")}
    out = package(ts_path, "torchserve", work / "ts_pkg", name="mlp", ports=ports, workers=workers, force=True)
    run = work / "ts_run"
    (run / "tmp").mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TMPDIR": str(run / "tmp"), "TEMP": str(run / "tmp"), "LOG_LOCATION": str(run / "logs")}
    proc = subprocess.Popen([str(BIN / "torchserve"), "--start", "--foreground", "--ncs", "--ts-config",
                             "config.properties"],
                            cwd=out, env=env, stdout=open(run / "torchserve.log", "wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        key, end = None, time.monotonic() + 120
        while key is None or "WORKER_MODEL_LOADED" not in (run / "torchserve.log").read_text(errors="replace"):
            if time.monotonic() > end or proc.poll() is not None:
                raise RuntimeError(f"TorchServe did not load the model; see {run / 'torchserve.log'}")
            if key is None and (out / "key_file.json").is_file():
                try:
                    key = json.loads((out / "key_file.json").read_text())["inference"]["key"]
                except (ValueError, KeyError):
                    pass  # still being written
            time.sleep(0.2)
    except BaseException:
        stop(proc)
        raise
    return proc, ports["inference"], key


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM the server's own process group (TorchServe: launcher, java, workers); SIGKILL after 30 s."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.helpers, when run as a script
    from tests.helpers.proc import stop_group

    stop_group(proc, 30.0)


def engine_calls(port: int) -> float:
    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("modelkit_engine_calls_total"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=3000, help="max requests per cell")
    ap.add_argument("--seconds", type=float, default=10.0, help="max seconds per cell")
    ap.add_argument("--concurrency", default="1,8,32,64")
    ap.add_argument("--torchserve-workers", type=int, default=2)
    args = ap.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    work = Path(tempfile.mkdtemp(prefix="bench_serving_"))
    ts_path, onnx_path, x, y = build_models(work)
    v2_body = json.dumps({"inputs": [{"name": "x", "shape": [1, D_IN], "datatype": "FP32",
                                      "data": x.ravel().tolist()}]}).encode()
    ts_body = json.dumps({"inputs": {"x": x.tolist()}}).encode()
    results: dict[str, dict[int, dict[str, float]]] = {}
    notes = []
    for label, max_batch in (("modelkit+batching", 32), ("modelkit no-batch", 1)):
        proc, port = start_modelkit(onnx_path, work, max_batch)
        try:
            probe = json.loads(urllib.request.urlopen(urllib.request.Request(
                f"http://{HOST}:{port}/v2/models/mlp/infer", v2_body), timeout=10).read())
            diff = np.abs(np.asarray(probe["outputs"][0]["data"]).reshape(y.shape) - y).max()
            notes.append(f"{label}: max |output - torch| = {diff:.2e}")
            results[label] = {}
            for c in levels:
                before = engine_calls(port)
                r = run_load(port, "/v2/models/mlp/infer", v2_body, {}, c, args.requests, args.seconds)
                r["rows_per_call"] = (r["n"] + 3 * c) / max(1.0, engine_calls(port) - before)  # + warm-up
                results[label][c] = r
                print(f"{label:18s} c={c:3d} {r['rps']:8.0f} req/s  p50 {r['p50']:7.2f} ms  p99 {r['p99']:7.2f} ms"
                      f"  rows/engine call {r['rows_per_call']:.1f}  errors {r['errors']}", flush=True)
        finally:
            stop(proc)
    proc, port, key = start_torchserve(ts_path, work, args.torchserve_workers)
    try:
        auth = {"Authorization": f"Bearer {key}"}
        req = urllib.request.Request(f"http://{HOST}:{port}/predictions/mlp", ts_body,
                                     {**auth, "Content-Type": "application/json"})
        probe = json.loads(urllib.request.urlopen(req, timeout=30).read())
        diff = np.abs(np.asarray(probe["outputs"]["probs"]) - y).max()
        notes.append(f"torchserve: max |output - torch| = {diff:.2e}")
        results["torchserve"] = {}
        for c in levels:
            r = run_load(port, "/predictions/mlp", ts_body, auth, c, args.requests, args.seconds)
            results["torchserve"][c] = r
            print(f"{'torchserve':18s} c={c:3d} {r['rps']:8.0f} req/s  p50 {r['p50']:7.2f} ms  p99 {r['p99']:7.2f} ms"
                  f"  errors {r['errors']}", flush=True)
    finally:
        stop(proc)
    print()
    print("\n".join(notes))
    print(f"\nTorchServe: {args.torchserve_workers} workers, batch size 1; modelkit: one onnxruntime session, "
          "max batch 32 / 2 ms (or 1). 1-row JSON requests, keep-alive.\n")
    hdr = f"{'conc':>4} | " + " | ".join(f"{k:>27s}" for k in results) + " | batch/TS rps | no-batch/TS rps"
    print(hdr)
    print(f"{'':>4} | " + " | ".join(f"{'req/s   p50 ms   p99 ms':>27s}" for _ in results) + " |")
    print("-" * len(hdr))
    for c in levels:
        cells = [f"{r[c]['rps']:9.0f} {r[c]['p50']:8.2f} {r[c]['p99']:8.2f}" for r in results.values()]
        ts = results["torchserve"][c]["rps"]
        batch, plain = results["modelkit+batching"][c]["rps"], results["modelkit no-batch"][c]["rps"]
        print(f"{c:>4} | " + " | ".join(f"{s:>27s}" for s in cells) + f" | {batch / ts:12.2f} | {plain / ts:15.2f}")


if __name__ == "__main__":
    main()
