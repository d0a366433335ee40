"""Dynamic batching merges concurrent requests into fewer engine calls; a full queue answers 503 fast."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from tests.helpers import call, make_tiny_onnx, masked_mean_int8_tflite, metrics, tiny_expected, v2_request


def _concurrent(port: int, xs: list[np.ndarray], path: str = "/v2/models/tiny/infer", **request: str) -> list:
    results: list = [None] * len(xs)
    barrier = threading.Barrier(len(xs))

    def one(i: int) -> None:
        barrier.wait(10)
        results[i] = call(port, "POST", path, v2_request(xs[i], **request), timeout=30)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


@pytest.mark.parametrize("max_batch, expect_merged", [(32, True), (1, False)])
def test_concurrent_requests_share_engine_calls(serve, tmp_path, max_batch, expect_merged):
    server = serve(make_tiny_onnx(tmp_path / "tiny.onnx"), "--max-batch-size", max_batch, "--max-delay-ms", 100)
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((int(rng.integers(1, 4)), 4)).astype(np.float32) for _ in range(16)]
    results = _concurrent(server.port, xs)
    for x, (status, resp) in zip(xs, results):
        assert status == 200, resp
        got = np.reshape(resp["outputs"][0]["data"], resp["outputs"][0]["shape"])
        np.testing.assert_allclose(got, tiny_expected(x), atol=1e-6)  # each caller gets its own rows back
    m = metrics(server.port)
    calls = m['modelkit_engine_calls_total{model="tiny",version="1"}']
    assert m['modelkit_batched_requests_total{model="tiny",version="1"}'] == 16
    assert m['modelkit_batch_size_sum{model="tiny",version="1"}'] == sum(len(x) for x in xs)
    assert m['modelkit_requests_total{model="tiny",protocol="v2",code="200"}'] == 16
    if expect_merged:
        assert calls < 16 / 2, f"{calls} engine calls for 16 concurrent requests"
        assert m['modelkit_batch_size_bucket{model="tiny",version="1",le="2"}'] < calls
    else:
        assert calls == 16


def test_full_queue_answers_503_quickly(serve, tmp_path):
    server = serve(make_tiny_onnx(tmp_path / "tiny.onnx"), "--queue-size", 2, "--max-batch-size", 64,
                   "--max-delay-ms", 10000)  # the two holders stay queued for 10 s
    x = np.ones((1, 4), np.float32)
    holders = [threading.Thread(target=lambda: results.append(call(server.port, "POST", "/v2/models/tiny/infer",
                                                                    v2_request(x), timeout=30)))
               for _ in range(2)]
    results: list = []
    for t in holders:
        t.start()
    end = time.monotonic() + 5
    while metrics(server.port).get('modelkit_queue_depth{model="tiny"}', 0) < 2 and time.monotonic() < end:
        time.sleep(0.01)
    assert metrics(server.port)['modelkit_queue_depth{model="tiny"}'] == 2
    start = time.monotonic()
    status, resp = call(server.port, "POST", "/v2/models/tiny/infer", v2_request(x))
    assert status == 503 and "queue is full" in resp["error"]
    assert time.monotonic() - start < 4  # at once, not after the 10 s batching delay (loose for busy CPUs)
    status, resp = call(server.port, "POST", "/v1/models/tiny:predict", {"instances": x.tolist()})
    assert status == 503
    for t in holders:
        t.join(30)
    assert [s for s, _ in results] == [200, 200]
    m = metrics(server.port)
    assert m['modelkit_requests_total{model="tiny",protocol="v2",code="503"}'] == 1
    assert m['modelkit_engine_calls_total{model="tiny",version="1"}'] == 1  # the two waiting ones, merged


def test_a_fixed_batch_model_takes_any_row_count_run_n_at_a_time(serve, tmp_path):
    """A library compiled for one batch (a tuned TVM library; here an ONNX model of batch 4, the same signature)
    answered 400 "dimension 0 must be 4" to every request of another size. It is served with an open batch: rows
    are gathered up to 4 and run 4 at a time (a short call filled up with repeated rows, dropped), each caller
    getting its own rows; non-batch dimensions are still checked."""
    server = serve(make_tiny_onnx(tmp_path / "tiny.onnx", batch=4), "--max-delay-ms", 50)
    status, meta = call(server.port, "GET", "/v2/models/tiny")
    assert status == 200 and meta["inputs"][0]["shape"] == [-1, 4] and meta["outputs"][0]["shape"] == [-1, 3]
    assert meta["parameters"]["max_batch_size"] == 4
    rng = np.random.default_rng(2)
    xs = [rng.standard_normal((n, 4)).astype(np.float32) for n in (1, 2, 3, 4, 5, 9, 1, 2)]
    for x, (status, resp) in zip(xs, _concurrent(server.port, xs)):
        assert status == 200, resp
        got = np.reshape(resp["outputs"][0]["data"], resp["outputs"][0]["shape"])
        np.testing.assert_allclose(got, tiny_expected(x), atol=1e-6)
    status, resp = call(server.port, "POST", "/v1/models/tiny:predict", {"instances": xs[1].tolist()})
    assert status == 200 and np.allclose(resp["predictions"], tiny_expected(xs[1]), atol=1e-6)
    status, resp = call(server.port, "POST", "/v2/models/tiny/infer", v2_request(np.zeros((3, 5), np.float32)))
    assert status == 400 and "dimension 1 must be 4" in resp["error"]


def test_one_requests_rows_that_fail_the_engine_fail_that_request_alone(serve, tmp_path):
    """nc39: an int8 TFLite masked-mean model failed to load in `modelkit serve` (its warm-up fed zeros, a row
    of padding only), and a merged batch holding one such row failed every request in it. The warm-up feeds ones;
    a merged call that fails runs again one request at a time."""
    path, model = masked_mean_int8_tflite(tmp_path / "reviews.tflite")
    server = serve(path, "--max-delay-ms", 200)
    good = [np.random.default_rng(i).integers(1, 10, (2, 6)).astype(np.int32) for i in range(5)]
    padding = np.zeros((1, 6), np.int32)
    results = _concurrent(server.port, [*good, padding], "/v2/models/reviews/infer", name="ids", datatype="INT32")
    for x, (status, resp) in zip(good, results):
        assert status == 200, resp
        got = np.reshape(resp["outputs"][0]["data"], resp["outputs"][0]["shape"])
        np.testing.assert_allclose(got, model.predict(x, verbose=0), atol=0.1)  # int8
    status, resp = results[-1]
    assert status == 500 and "DIV" in resp["error"]
    assert "run again one by one" in server.log.read_text()  # the six requests were merged, then split


@pytest.mark.slow
def test_a_model_that_needs_a_longer_input_warms_up_serves_and_answers_400_for_a_size_it_refuses(serve, tmp_path):
    """A valid convolution of 3 over an open length: the warm-up fed length 1, so the model never served
    ("version 1 failed to load: ShapeError"); it now warms up at the smallest length its parity ran at (13, from
    the manifest). A request of length 1 passes the signature's check and the engine refuses it typed: a 400
    naming the sizes, logged as one warning line, not as an engine failure with its traceback."""
    import modelkit
    from modelkit._backend import import_keras
    from modelkit.serving.warmup import feeds

    keras = import_keras("tensorflow")
    keras.utils.set_random_seed(0)
    frames = keras.Input((None, 4), name="frames")
    out = keras.layers.GlobalMaxPooling1D()(keras.layers.Conv1D(2, 3, padding="valid")(frames))
    keras.Model(frames, keras.layers.Dense(2, name="y")(out)).save(tmp_path / "conv.keras")
    (r,) = modelkit.convert(tmp_path / "conv.keras", "tflite", out_dir=tmp_path)
    sig = modelkit.load(r.path).signature
    assert [f["frames"].shape for f in feeds(r.path, sig, 2)][:3] == [(2, 13, 4), (2, 1, 4), (2, 13, 4)]
    assert next(feeds(tmp_path / "none.tflite", sig, 1))["frames"].shape == (1, 1, 4)  # no manifest: tried in turn
    server = serve(r.path)
    status, resp = call(server.port, "POST", "/v2/models/conv/infer", v2_request(np.ones((1, 1, 4), np.float32),
                                                                               name="frames"))
    assert status == 400 and "cannot run at input shapes 'frames' (1, 1, 4)" in resp["error"], resp
    status, resp = call(server.port, "POST", "/v2/models/conv/infer", v2_request(np.ones((1, 5, 4), np.float32),
                                                                               name="frames"))
    assert status == 200, resp
    log = server.log.read_text()
    assert "a request's inputs refused by the engine: " in log and "Traceback" not in log
