"""A bounded loopback load generator for the stress tests and benchmarks/bench_reliability.py: N requests
over C keep-alive connections (threads), each request bounded by a timeout, the whole run by a deadline."""
from __future__ import annotations

import http.client as httpclient
import json
import threading
import time
from dataclasses import dataclass, field

import numpy as np

HOST = "127.0.0.1"


@dataclass
class Result:
    status: list[int] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)
    version: list[str] = field(default_factory=list)
    wrong: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, code: int) -> int:
        return sum(1 for s in self.status if s == code)

    def p(self, q: float, code: int | None = 200) -> float:
        lat = [t for s, t in zip(self.status, self.latency) if code is None or s == code]
        return float(np.percentile(lat, q)) * 1000 if lat else float("nan")


def body(x: np.ndarray) -> bytes:
    return json.dumps({"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                                   "data": x.ravel().tolist()}]}).encode()


def run(port: int, total: int, concurrency: int, check=None, deadline_s: float = 300.0,
        path: str = "/v2/models/tiny/infer", timeout: float = 30.0) -> Result:
    """Send `total` requests; check(version, outputs) -> bool marks wrong answers. Never runs past deadline_s."""
    res, lock = Result(), threading.Lock()
    counter = iter(range(total))
    x = np.array([[1, 2, 3, 4]], np.float32)
    payload, end = body(x), time.monotonic() + deadline_s

    def worker() -> None:
        conn = httpclient.HTTPConnection(HOST, port, timeout=timeout)
        try:
            while time.monotonic() < end:
                with lock:
                    if next(counter, None) is None:
                        return
                t0 = time.perf_counter()
                try:
                    conn.request("POST", path, body=payload, headers={"Content-Type": "application/json"})
                    resp = conn.getresponse()
                    data = resp.read()
                    status = resp.status
                    if resp.getheader("connection", "").lower() == "close":
                        conn.close()
                except (OSError, httpclient.HTTPException) as exc:
                    conn.close()
                    with lock:
                        res.errors.append(f"{type(exc).__name__}: {exc}")
                        res.status.append(-1)
                        res.latency.append(time.perf_counter() - t0)
                        res.version.append("?")
                    continue
                dt = time.perf_counter() - t0
                version, ok = "?", True
                if status == 200:
                    out = json.loads(data)
                    version = out.get("model_version", "?")
                    if check is not None:
                        ok = check(version, np.reshape(out["outputs"][0]["data"], (1, 3)))
                with lock:
                    res.status.append(status)
                    res.latency.append(dt)
                    res.version.append(version)
                    res.wrong += 0 if ok else 1
        finally:
            conn.close()

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(1.0, end - time.monotonic() + timeout))
    res.seconds = time.monotonic() - t0
    return res


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")
