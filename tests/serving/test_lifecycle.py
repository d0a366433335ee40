"""Hot-swap under load, a failing new version, readiness before warm-up, and the SIGTERM drain."""
from __future__ import annotations

import os
import re
import signal
import threading
import time

import numpy as np
import pytest

from tests.helpers import add_version, call, make_tiny_onnx, metrics, tiny_expected, v2_request

X = np.array([[1, 2, 3, 4]], np.float32)


def test_hot_swap_under_load_fails_no_request(serve, tmp_path):
    repo = tmp_path / "repo"
    add_version(repo, 1)
    server = serve(repo, "--max-delay-ms", 1)
    v1, v2 = tiny_expected(X), tiny_expected(X, weight_scale=2.0)
    assert np.abs(v1 - v2).max() > 0.05  # the versions are distinguishable
    seen: list[tuple[int, str, float]] = []  # (status, version, time)
    stop = threading.Event()

    def client() -> None:
        for _ in range(2000):  # bounded in count, and in time by `stop`
            if stop.is_set():
                return
            status, resp = call(server.port, "POST", "/v2/models/tiny/infer", v2_request(X), timeout=30)
            version = resp.get("model_version", "?") if status == 200 else "?"
            if status == 200:  # a wrong answer is recorded as status -1 (asserts in threads are lost)
                got = np.reshape(resp["outputs"][0]["data"], (1, 3))
                status = 200 if np.abs(got - (v1 if version == "1" else v2)).max() <= 1e-6 else -1
            seen.append((status, version, time.monotonic()))

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        add_version(repo, 2, weight_scale=2.0)
        status, resp = call(server.port, "POST", "/v2/repository/models/tiny/load")
        swapped_at = time.monotonic()
        assert status == 200 and resp["default_version"] == "2", resp
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert len(seen) > 20
    assert all(s == 200 for s, _, _ in seen), [s for s, _, _ in seen if s != 200][:5]
    assert {v for _, v, _ in seen} == {"1", "2"}
    assert all(v == "2" for _, v, t in seen if t > swapped_at + 0.05)
    assert call(server.port, "GET", "/v2/models/tiny")[1]["versions"] == ["2"]  # v1 drained and unloaded
    assert metrics(server.port)['modelkit_model_swaps_total{model="tiny"}'] == 1


def test_failing_new_version_leaves_the_old_one_serving(serve, tmp_path):
    repo = tmp_path / "repo"
    add_version(repo, 1)
    server = serve(repo, "--poll-interval", 0.2)
    add_version(repo, 2, content=b"\x08\x07\x12\x04junk" + os.urandom(64))  # looks like ONNX, is not
    end = time.monotonic() + 20
    index: list = []
    while time.monotonic() < end and not any(r["version"] == "2" for r in index):
        index = call(server.port, "POST", "/v2/repository/index")[1]
        time.sleep(0.1)
    failed = [r for r in index if r["version"] == "2"]
    assert failed and failed[0]["state"] == "UNAVAILABLE" and "failed to load" in failed[0]["reason"]
    status, resp = call(server.port, "POST", "/v2/models/tiny/infer", v2_request(X))
    assert status == 200 and resp["model_version"] == "1"
    np.testing.assert_allclose(np.reshape(resp["outputs"][0]["data"], (1, 3)), tiny_expected(X), atol=1e-6)
    meta = call(server.port, "GET", "/v2/models/tiny")[1]
    assert meta["parameters"]["default_version"] == "1" and "2" in meta["parameters"]["failed_versions"]
    rows = call(server.port, "GET", "/v1/models/tiny")[1]["model_version_status"]
    assert {r["version"]: r["state"] for r in rows} == {"1": "AVAILABLE", "2": "END"}
    status, resp = call(server.port, "POST", "/v2/repository/models/tiny/load")
    assert status == 400 and "version 2 failed to load" in resp["error"] and resp["default_version"] == "1"
    assert metrics(server.port)['modelkit_model_load_failures_total{model="tiny",version="2"}'] == 1
    assert "version 2 failed to load" in server.text()
    assert call(server.port, "GET", "/v2/health/ready")[0] == 200


def test_versions_older_than_the_kept_ones_are_never_loaded(serve, tmp_path):
    """Only the served versions are loaded at startup (newest first; a newest that fails leaves the next one
    serving), and an unloaded version left on disk stays unloaded: every scan loaded and unloaded it again."""
    repo = tmp_path / "repo"
    add_version(repo, 1)
    add_version(repo, 2, weight_scale=2.0)
    add_version(repo, 3, content=b"\x08\x07\x12\x04junk" + os.urandom(64))  # the newest fails
    server = serve(repo)
    status, resp = call(server.port, "POST", "/v2/models/tiny/infer", v2_request(X))
    assert status == 200 and resp["model_version"] == "2"
    add_version(repo, 4, weight_scale=3.0)
    for _ in range(3):  # each load request scans the repository, as each poll does
        status, resp = call(server.port, "POST", "/v2/repository/models/tiny/load")
        assert status == 200 and resp["default_version"] == "4", resp  # 3, failed and now old, no longer reported
    log = server.text()
    loads = [int(v) for v in re.findall(r"loading model 'tiny' version (\d+)", log)]
    assert loads == [3, 2, 4], log  # never 1; 2 not again after its unloading
    assert call(server.port, "GET", "/v2/models/tiny")[1]["versions"] == ["4"]
    assert "modelkit serve: ready" in log  # the newest failed, and v2 serves: ready


def test_a_model_that_fails_at_startup_is_said_not_ready(serve, tmp_path):
    """nc46 served a custom model without --import: the only model failed to load, and the server printed
    "modelkit serve: ready" while /v2/health/ready answered 503."""
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x07\x12\x04junk" + os.urandom(64))  # looks like ONNX, is not
    server = serve(bad, ready=False)
    end = time.monotonic() + 60
    while time.monotonic() < end and "ready" not in server.text().split("listening on", 1)[1]:
        time.sleep(0.05)
    line = next(ln for ln in server.text().splitlines() if ln.startswith("modelkit serve: ") and "ready" in ln)
    assert line.startswith("modelkit serve: NOT ready: 1 of 1 model(s) have no version loaded ('broken' version 1 "
                           "failed to load: LoadError: "), line
    assert line.endswith("/v2/health/ready answers 503 until they load (a version is tried again when its files "
                         "change)"), line
    assert call(server.port, "GET", "/v2/health/ready")[0] == 503


def test_sigterm_drains_accepted_requests_and_exits_0(serve, tmp_path):
    server = serve(make_tiny_onnx(tmp_path / "tiny.onnx"), "--max-batch-size", 64, "--max-delay-ms", 10000)
    rng = np.random.default_rng(5)
    xs = [rng.standard_normal((1, 4)).astype(np.float32) for _ in range(6)]
    results: dict[int, tuple] = {}

    def one(i: int) -> None:
        results[i] = call(server.port, "POST", "/v2/models/tiny/infer", v2_request(xs[i]), timeout=30)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    end = time.monotonic() + 10
    while metrics(server.port).get('modelkit_queue_depth{model="tiny"}', 0) < len(xs) and time.monotonic() < end:
        time.sleep(0.01)
    assert metrics(server.port)['modelkit_queue_depth{model="tiny"}'] == len(xs)  # all accepted, all waiting
    server.proc.send_signal(signal.SIGTERM)
    start = time.monotonic()
    assert server.proc.wait(20) == 0
    assert time.monotonic() - start < 6  # the queue is flushed at once, not after the 10 s batching delay
    for t in threads:
        t.join(10)
    for i, x in enumerate(xs):
        status, resp = results[i]
        assert status == 200, resp
        np.testing.assert_allclose(np.reshape(resp["outputs"][0]["data"], (1, 3)), tiny_expected(x), atol=1e-6)
    assert "modelkit serve: stopped" in server.text()


@pytest.mark.slow
def test_not_ready_until_warm_then_serves_saved_model(serve, converted):
    import modelkit

    sm = converted["tensorflow"]["saved_model"]
    server = serve(f"cnn={sm}", ready=False)
    status, resp = call(server.port, "GET", "/v2/health/ready")
    assert status == 503 and resp == {"ready": False}  # TensorFlow is still importing and loading
    status, resp = call(server.port, "POST", "/v2/models/cnn/infer", {"inputs": []})
    assert status == 503 and ("still loading" in resp["error"] or "ready yet" in resp["error"])
    server.wait_ready(120)
    local = modelkit.load(sm)
    spec = local.signature.inputs[0]
    x = np.random.default_rng(2).random(spec.concrete_shape(3), np.float32)
    status, resp = call(server.port, "POST", "/v2/models/cnn/infer", v2_request(x, spec.name))
    assert status == 200, resp
    assert call(server.port, "GET", "/v2/models/cnn")[1]["platform"] == "tensorflow_savedmodel"
    want = local.predict(x)
    for out in resp["outputs"]:
        assert np.abs(np.reshape(out["data"], out["shape"]) - want[out["name"]]).max() <= 1e-6
