"""Every endpoint of both protocols against a real `modelkit serve` on the tiny ONNX model."""
from __future__ import annotations

import json
import socket
import time

import numpy as np
import pytest

from tests.helpers import HOST, call, http, make_tiny_onnx, metrics, tiny_expected, v2_request

X = np.array([[1, 2, 3, 4], [0.5, -1, 0, 2]], np.float32)


@pytest.fixture
def tiny_server(serve, tmp_path):
    return serve(make_tiny_onnx(tmp_path / "tiny.onnx"), "--max-body-mb", "1")


def test_v2_health_metadata_and_infer(tiny_server):
    port = tiny_server.port
    assert call(port, "GET", "/v2/health/live") == (200, {"live": True})
    assert call(port, "GET", "/v2/health/ready") == (200, {"ready": True})
    status, meta = call(port, "GET", "/v2")
    assert status == 200 and meta["name"] == "modelkit" and "binary_tensor_data" in meta["extensions"]
    status, meta = call(port, "GET", "/v2/models/tiny")
    assert status == 200
    assert meta["platform"] == "onnxruntime_onnx" and meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert meta["outputs"] == [{"name": "probs", "datatype": "FP32", "shape": [-1, 3]}]
    assert call(port, "GET", "/v2/models/tiny/versions/1")[1]["name"] == "tiny"
    assert call(port, "GET", "/v2/models/tiny/ready") == (200, {"name": "tiny", "ready": True})
    assert call(port, "GET", "/v2/models/tiny/versions/1/ready")[0] == 200

    req = {**v2_request(X), "id": "req-7"}
    status, resp = call(port, "POST", "/v2/models/tiny/infer", req)
    assert status == 200, resp
    assert resp["model_name"] == "tiny" and resp["model_version"] == "1" and resp["id"] == "req-7"
    out = resp["outputs"][0]
    assert out["name"] == "probs" and out["shape"] == [2, 3] and out["datatype"] == "FP32"
    np.testing.assert_allclose(np.reshape(out["data"], (2, 3)), tiny_expected(X), atol=1e-6)
    # nested data and an explicit version give the same answer
    nested = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": X.tolist()}]}
    status, resp2 = call(port, "POST", "/v2/models/tiny/versions/1/infer", nested)
    assert status == 200 and resp2["outputs"][0]["data"] == out["data"]


def test_v2_binary_tensor_extension(tiny_server):
    header = json.dumps({"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32",
                                     "parameters": {"binary_data_size": X.nbytes}}],
                         "parameters": {"binary_data_output": True}}).encode()
    status, headers, body = http(tiny_server.port, "POST", "/v2/models/tiny/infer", header + X.tobytes(),
                                 {"Inference-Header-Content-Length": str(len(header))})
    assert status == 200, body
    n = int(headers["inference-header-content-length"])
    meta = json.loads(body[:n])
    assert meta["outputs"][0]["parameters"]["binary_data_size"] == 2 * 3 * 4
    probs = np.frombuffer(body[n:], np.float32).reshape(2, 3)
    np.testing.assert_allclose(probs, tiny_expected(X), atol=1e-6)


def test_tf_serving_row_column_and_status(tiny_server):
    port = tiny_server.port
    status, resp = call(port, "POST", "/v1/models/tiny:predict", {"instances": X.tolist()})
    assert status == 200
    np.testing.assert_allclose(resp["predictions"], tiny_expected(X), atol=1e-6)
    status, resp = call(port, "POST", "/v1/models/tiny/versions/1:predict", {"inputs": {"x": X.tolist()}})
    assert status == 200
    np.testing.assert_allclose(resp["outputs"], tiny_expected(X), atol=1e-6)
    status, resp = call(port, "POST", "/v1/models/tiny:predict", {"instances": [{"x": [1, 2, 3, 4]}]})
    assert status == 200 and len(resp["predictions"]) == 1
    status, resp = call(port, "GET", "/v1/models/tiny")
    assert status == 200
    assert resp["model_version_status"] == [{"version": "1", "state": "AVAILABLE",
                                             "status": {"error_code": "OK", "error_message": ""}}]
    status, resp = call(port, "GET", "/v1/models/tiny/metadata")
    sig = resp["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert status == 200 and sig["inputs"]["x"]["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in sig["inputs"]["x"]["tensor_shape"]["dim"]] == ["-1", "4"]


@pytest.mark.parametrize("req, fragment", [
    ({"inputs": [{"name": "y", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}, "unknown input 'y'"),
    ({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}, "dimension 1 must be 4"),
    ({"inputs": [{"name": "x", "shape": [4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}, "expected rank 2"),
    ({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "INT64", "data": [1, 2, 3, 4]}]}, "datatype 'INT64'"),
    ({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "BYTES", "data": ["a", "b", "c", "d"]}]}, "BYTES"),
    ({"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}, "has 8 elements"),
    ({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": ["a", "b", "c", "d"]}]}, "strings"),
    ({"inputs": []}, "missing ['x']"),
    ({"nope": 1}, "'inputs' list"),
])
def test_v2_validation_errors_are_400_with_a_message(tiny_server, req, fragment):
    status, resp = call(tiny_server.port, "POST", "/v2/models/tiny/infer", req)
    assert status == 400
    assert fragment in resp["error"]


def test_errors_404_405_and_bad_json(tiny_server):
    port = tiny_server.port
    status, resp = call(port, "POST", "/v2/models/nope/infer", v2_request(X))
    assert status == 404 and "unknown model 'nope'" in resp["error"]
    assert call(port, "GET", "/v2/models/tiny/versions/9")[0] == 404
    assert call(port, "POST", "/v1/models/nope:predict", {"instances": [[1, 2, 3, 4]]})[0] == 404
    assert call(port, "GET", "/v2/models/tiny/infer")[0] == 405
    status, _, body = http(port, "POST", "/v2/models/tiny/infer", b"{not json")
    assert status == 400 and "not valid JSON" in json.loads(body)["error"]
    status, resp = call(port, "POST", "/v1/models/tiny:predict", {"instances": [[1, 2, 3]]})
    assert status == 400 and "dimension 1 must be 4" in resp["error"]
    status, resp = call(port, "POST", "/v1/models/tiny:predict", {"instances": [["a", "b", "c", "d"]]})
    assert status == 400 and "strings" in resp["error"]
    m = metrics(port)
    assert m['modelkit_requests_total{model="tiny",protocol="v2",code="400"}'] == 1
    assert m['modelkit_requests_total{model="?",protocol="v2",code="404"}'] == 1


def test_oversized_body_gets_413_before_it_is_read(tiny_server):
    """Content-Length of 100 MB against a 1 MB limit: 413 at once, having sent only 64 KB."""
    start = time.monotonic()
    with socket.create_connection((HOST, tiny_server.port), timeout=10) as s:
        s.sendall(b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 100000000\r\n\r\n" + b" " * 65536)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"HTTP/1.1 413"), data[:200]
    assert time.monotonic() - start < 5
    # chunked bodies are counted as they arrive
    with socket.create_connection((HOST, tiny_server.port), timeout=10) as s:
        chunk = b" " * 600_000
        s.sendall(b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                  + (b"%x\r\n" % len(chunk) + chunk + b"\r\n") * 2)
        assert s.recv(4096).startswith(b"HTTP/1.1 413")
    # the server is fine afterwards
    assert call(tiny_server.port, "POST", "/v2/models/tiny/infer", v2_request(X))[0] == 200


def test_non_loopback_bind_needs_allow_remote(tmp_path):
    import subprocess
    import sys

    onnx_path = make_tiny_onnx(tmp_path / "tiny.onnx")
    proc = subprocess.run([sys.executable, "-m", "modelkit", "serve", str(onnx_path), "--host", "0.0.0.0",
                           "--port", "0"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "--allow-remote" in proc.stderr


def test_triton_http_client_talks_to_modelkit_serve(tiny_server):
    tritonclient = pytest.importorskip("tritonclient.http")
    client = tritonclient.InferenceServerClient(url=f"{HOST}:{tiny_server.port}", connection_timeout=10,
                                                network_timeout=30)
    try:
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("tiny")
        meta = client.get_model_metadata("tiny")
        assert meta["inputs"][0]["shape"] == [-1, 4]
        for binary in (True, False):
            inp = tritonclient.InferInput("x", list(X.shape), "FP32")
            inp.set_data_from_numpy(X, binary_data=binary)
            out = tritonclient.InferRequestedOutput("probs", binary_data=binary)
            result = client.infer("tiny", [inp], outputs=[out])
            np.testing.assert_allclose(result.as_numpy("probs"), tiny_expected(X), atol=1e-6)
        bad = tritonclient.InferInput("x", [1, 4], "FP64")
        bad.set_data_from_numpy(np.ones((1, 4), np.float64))
        with pytest.raises(Exception, match="datatype") as err:
            client.infer("tiny", [bad])
        assert "FP32" in str(err.value)
    finally:
        client.close()


@pytest.mark.slow
def test_trained_cnn_onnx_matches_modelkit_load(serve, converted):
    import modelkit

    onnx_path = converted["tensorflow"]["onnx"]
    local = modelkit.load(onnx_path)
    spec = local.signature.inputs[0]
    x = np.random.default_rng(3).random(spec.concrete_shape(5), np.float32)
    server = serve(f"cnn={onnx_path}")
    status, resp = call(server.port, "POST", "/v2/models/cnn/infer", v2_request(x, spec.name))
    assert status == 200, resp
    want = local.predict(x)
    for out in resp["outputs"]:
        got = np.asarray(out["data"], np.float32).reshape(out["shape"])
        assert np.abs(got - want[out["name"]]).max() <= 1e-6
    status, resp = call(server.port, "POST", "/v1/models/cnn:predict", {"instances": x.tolist()})
    assert status == 200
    first = local.signature.output_names[0]
    assert np.abs(np.asarray(resp["predictions"], np.float32) - want[first]).max() <= 1e-6
