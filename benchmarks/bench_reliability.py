"""Reliability figures for docs/reliability.md: the server under stress (loopback, bounded) and the fuzzers.

    .venv/bin/python benchmarks/bench_reliability.py [--requests 10000] [--concurrency 64] [--fuzz 200]

Serving: N requests at concurrency C through two version swaps (failed requests, throughput, p50/p99);
a flood at 10x the queue (503 count, 503 p99, accepted p99, server RSS before/after); SIGTERM under load
(accepted requests answered, exit code); a 1 GiB Content-Length against a 1 MiB limit (time to 413).
Fuzz: per format, M mutated files (truncation, bit flips, splices, random tails) loaded + inspected +
run in a child process under RLIMIT_AS: ok / typed error / untyped / crash / hang counts.
Everything binds 127.0.0.1 on free ports; every loop is bounded in count and time; servers are stopped.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.update({"TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "0", "PYTHONWARNINGS": "ignore"})

from tests.helpers import (  # noqa: E402
    ServerProcess,
    add_version,  # noqa: E402
    call,
    metrics,
)
from tests.security import _load  # noqa: E402


def serving(work: Path, total: int, concurrency: int) -> list[tuple[str, str]]:
    rows = []
    repo = work / "repo"
    add_version(repo, 1)
    s = ServerProcess([str(repo), "--max-delay-ms", "1", "--queue-size", str(4 * concurrency)], work / "a.log", work)
    try:
        s.wait_ready()
        out: list[_load.Result] = []
        t = threading.Thread(target=lambda: out.append(_load.run(s.port, total, concurrency, deadline_s=600)))
        t.start()
        for v in (2, 3):
            end = time.monotonic() + 120
            while not out and time.monotonic() < end and metrics(s.port).get(
                    'modelkit_requests_total{model="tiny",protocol="v2",code="200"}', 0) < total * (v - 1) / 3:
                time.sleep(0.05)
            add_version(repo, v, weight_scale=float(v))
            call(s.port, "POST", "/v2/repository/models/tiny/load")
        t.join(660)
        r = out[0]
        rows.append((f"{total} requests at concurrency {concurrency}, 2 version swaps",
                     f"{total - r.count(200)} failed; {total / r.seconds:.0f} req/s; p50 {r.p(50):.1f} ms, "
                     f"p99 {r.p(99):.1f} ms; versions seen {sorted(set(r.version))}"))
    finally:
        s.stop()
    # flood at 10x the queue
    s = ServerProcess([str(repo), "--queue-size", "8", "--max-batch-size", "8", "--max-delay-ms", "2"],
                      work / "b.log", work)
    try:
        s.wait_ready()
        _load.run(s.port, 200, 8)
        before = _load.rss_mb(s.proc.pid)
        rs = [_load.run(s.port, 800, 80, deadline_s=120) for _ in range(5)]
        after = _load.rss_mb(s.proc.pid)
        st = [x for r in rs for x in r.status]
        lat = [x for r in rs for x in r.latency]
        m = _load.Result(status=st, latency=lat)
        rows.append(("flood: 80 concurrent clients vs a queue of 8 (4000 requests)",
                     f"{m.count(503)} fast 503s (p99 {m.p(99, 503):.1f} ms), {m.count(200)} served (p99 "
                     f"{m.p(99, 200):.1f} ms), other statuses {sorted(set(st) - {200, 503})}; "
                     f"server RSS {before:.0f} -> {after:.0f} MB"))
    finally:
        s.stop()
    # SIGTERM under load
    s = ServerProcess([str(repo), "--max-delay-ms", "1", "--queue-size", "1024"], work / "c.log", work)
    s.wait_ready()
    out = []
    t = threading.Thread(target=lambda: out.append(_load.run(s.port, 50_000, 16, deadline_s=60, timeout=20)))
    t.start()
    end = time.monotonic() + 30
    while time.monotonic() < end and metrics(s.port).get(
            'modelkit_requests_total{model="tiny",protocol="v2",code="200"}', 0) < 2000:
        time.sleep(0.05)
    s.proc.send_signal(signal.SIGTERM)
    rc = s.proc.wait(30)
    t.join(150)
    r = out[0]
    refused = sum("refused" in e for e in r.errors)
    closed = sum("RemoteDisconnected" in e or "reset" in e.lower() or "Broken pipe" in e for e in r.errors)
    rows.append(("SIGTERM under load (16 clients, signal after ~2000 answers)",
                 f"exit {rc}; {r.count(200)} answered 200; after the signal {r.count(503)} told 503, "
                 f"{refused} connections refused, {closed} idle keep-alive connections closed before a request "
                 f"was read, other errors {len(r.errors) - refused - closed}; "
                 f"5xx other than 503: {sum(1 for x in r.status if x >= 500 and x != 503)}"))
    # 413 without reading the body
    s = ServerProcess([str(repo), "--max-body-mb", "1"], work / "d.log", work)
    try:
        s.wait_ready()
        with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
            t0 = time.perf_counter()
            c.sendall(b"POST /v2/models/tiny/infer HTTP/1.1\r\nContent-Length: 1073741824\r\n\r\n" + b"0" * 65536)
            reply = c.recv(4096)
            dt = (time.perf_counter() - t0) * 1000
        rows.append(("1 GiB Content-Length vs a 1 MiB limit", f"{reply.split(b' ')[1].decode()} in {dt:.1f} ms "
                                                                 "after 64 KiB sent"))
    finally:
        s.stop()
    return rows


def fuzz(work: Path, per_format: int) -> list[tuple[str, str]]:
    from tests.helpers import LoadWorker
    from tests.security._build import build_all, build_tvm

    arts = build_all(work / "arts")
    arts["tvm"] = build_tvm(work / "tvm", arts["onnx"])
    w = LoadWorker(timeout=30)
    rows = []
    try:
        for fmt, src in arts.items():
            d = work / f"fz_{fmt}"
            shutil.copytree(src.parent if fmt == "tvm" else src, d / src.name) if src.is_dir() else None
            d.mkdir(exist_ok=True)
            if src.is_file():
                shutil.copy2(src, d / src.name)
                mf = src.with_name(src.name + ".modelkit.json")
                if mf.exists():
                    shutil.copy2(mf, d / mf.name)
            path = d / src.name
            target = path / "saved_model.pb" if path.is_dir() else path
            orig, counts, t0 = target.read_bytes(), {}, time.monotonic()
            for seed in range(per_format):
                rng, data = random.Random(seed), bytearray(orig)
                kind = rng.choice(["flip", "trunc", "splice"])
                if kind == "flip":
                    for i in rng.sample(range(len(data)), rng.choice([1, 4, 32])):
                        data[i] ^= 1 << rng.randrange(8)
                elif kind == "trunc":
                    data = data[: rng.randrange(len(data))]
                else:
                    o = rng.randrange(len(data))
                    data[o:o + 8] = rng.randbytes(8)
                target.write_bytes(bytes(data))
                r = w.load(path)
                key = ("ok" if r["ok"] else "typed" if r.get("typed") else "crash" if "crash" in r
                       else "hang" if "hang" in r else "untyped")
                counts[key] = counts.get(key, 0) + 1
            summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
            rows.append((f"fuzz {fmt}: {per_format} mutated files", f"{summary} ({time.monotonic() - t0:.0f} s)"))
    finally:
        w.close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--fuzz", type=int, default=200, help="mutated files per format (0: skip)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-reliability-") as td:
        rows = serving(Path(td), args.requests, args.concurrency)
        if args.fuzz:
            rows += fuzz(Path(td), args.fuzz)
    print("| check | result |\n| --- | --- |")
    for k, v in rows:
        print(f"| {k} | {v} |")


if __name__ == "__main__":
    main()
