"""Bad requests from an external attack set (issue 14): every one is a 4xx with a message, decided before
any inference; the HTTP framing refuses ambiguous or oversized lines; odd model names are 404s."""
from __future__ import annotations

import json
import socket

import pytest

from tests.helpers import HOST, add_version, call, http, metrics, v2_request

X = [[1.0, 2.0, 3.0, 4.0]]
ENGINE_CALLS = 'modelkit_engine_calls_total{model="tiny",version="1"}'


@pytest.fixture
def repo_server(serve, tmp_path):
    """A repository server (`modelkit serve DIR`): tiny/1/model.onnx."""
    add_version(tmp_path / "repo", 1)
    return serve(tmp_path / "repo", "--max-body-mb", 1)


def raw(port: int, data: bytes, timeout: float = 20.0) -> bytes:
    """Send raw bytes, return everything the server answers until it closes (or one full response)."""
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.sendall(data)
        reply = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            reply += chunk
            head, sep, rest = reply.partition(b"\r\n\r\n")
            if sep:
                length = [int(v) for k, _, v in (h.partition(b":") for h in head.split(b"\r\n")[1:])
                          if k.strip().lower() == b"content-length"]
                if length and len(rest) >= length[0]:
                    break
    return reply


def _infer_raw(headers: str, body: bytes) -> bytes:
    return (f"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{headers}\r\n"
            .encode() + body)


def _binary(header: dict, blob: bytes = b"") -> tuple[bytes, dict]:
    head = json.dumps(header).encode()
    return head + blob, {"Inference-Header-Content-Length": str(len(head))}


def _x(**extra) -> dict:
    return {"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4], **extra}


BAD_BODIES = {
    "huge shape, empty JSON data": ({"inputs": [{"name": "x", "shape": [0, 2**70], "datatype": "FP32", "data": []}]},
                                    "too large"),
    "huge shape, empty binary data": (_binary({"inputs": [{"name": "x", "shape": [0, 2**70], "datatype": "FP32",
                                                           "parameters": {"binary_data_size": 0}}]}), "too large"),
    "rank over the limit": ({"inputs": [{"name": "x", "shape": [1] * 40, "datatype": "FP32", "data": [1]}]},
                            "rank 40"),
    "request parameters a string": ({**v2_request(X), "parameters": "binary"}, "'parameters' must be an object"),
    "request parameters a list": ({**v2_request(X), "parameters": ["binary_data_output"]},
                                  "'parameters' must be an object"),
    "input parameters a string": ({"inputs": [_x(parameters="x")]}, "input 'x': 'parameters' must be an object"),
    "input parameters a list": ({"inputs": [_x(parameters=[1])]}, "input 'x': 'parameters' must be an object"),
    "output parameters a number": ({**v2_request(X), "outputs": [{"name": "probs", "parameters": 7}]},
                                   "output 'probs': 'parameters' must be an object"),
    "output binary_data not a bool": ({**v2_request(X), "outputs": [{"name": "probs", "parameters":
                                                                      {"binary_data": "yes"}}]}, "true or false"),
    "binary_data_output not a bool": ({**v2_request(X), "parameters": {"binary_data_output": 1}}, "true or false"),
    "unknown output": ({**v2_request(X), "outputs": [{"name": "nope"}]}, "unknown output 'nope'"),
    "outputs not a list": ({**v2_request(X), "outputs": {"name": "probs"}}, "'outputs' must be a list"),
    "binary_data_size a bool": (_binary({"inputs": [_x(parameters={"binary_data_size": True})]}, b"\0"),
                                "binary_data_size True"),
}


def test_bad_v2_requests_are_400_before_any_inference(repo_server):
    port = repo_server.port
    for case, (body, fragment) in BAD_BODIES.items():
        if isinstance(body, tuple):
            status, _, data = http(port, "POST", "/v2/models/tiny/infer", body[0], body[1])
            resp = json.loads(data)
        else:
            status, resp = call(port, "POST", "/v2/models/tiny/infer", body)
        assert status == 400, (case, status, resp)
        assert fragment in resp["error"], (case, resp)
    m = metrics(port)
    assert m.get(ENGINE_CALLS, 0) == 0, "a bad request reached the engine"
    assert m['modelkit_requests_total{model="tiny",protocol="v2",code="400"}'] == len(BAD_BODIES)
    assert not any('code="500"' in k for k in m), [k for k in m if 'code="500"' in k]
    # a good request still runs (and is counted: the zero above means something)
    status, resp = call(port, "POST", "/v2/models/tiny/infer",
                        {**v2_request(X), "outputs": [{"name": "probs", "parameters": {"binary_data": False}}]})
    assert status == 200 and resp["outputs"][0]["shape"] == [1, 3], resp
    assert metrics(port)[ENGINE_CALLS] == 1


@pytest.mark.parametrize("chunks, status, fragment", [
    (b"1;" + b"e" * 70_000 + b"\r\n{\r\n0\r\n\r\n", 400, b"chunk size line"),   # over the 64 KiB reader limit
    (b"1;" + b"e" * 5_000 + b"\r\n{\r\n0\r\n\r\n", 400, b"chunk size line"),    # over the 4 KiB size-line limit
    (b"2\r\n{}\r\n0\r\nX-Trailer: " + b"t" * 70_000 + b"\r\n\r\n", 431, b"trailer section"),
    (b"2\r\n{}\r\n0\r\n" + b"X-T: " + b"t" * 40_000 + b"\r\nX-U: " + b"u" * 40_000 + b"\r\n\r\n", 431,
     b"trailer section"),
    (b"zz\r\n{}\r\n0\r\n\r\n", 400, b"bad chunk size"),
    (b"0x2\r\n{}\r\n0\r\n\r\n", 400, b"bad chunk size"),
    (b"-2\r\n{}\r\n0\r\n\r\n", 400, b"bad chunk size"),
    (b"1_0\r\n" + b" " * 16 + b"\r\n0\r\n\r\n", 400, b"bad chunk size"),
    (b"2\r\n{}XX0\r\n\r\n", 400, b"does not end with CRLF"),
])
@pytest.mark.slow
def test_bad_chunked_framing_gets_an_answer(repo_server, chunks, status, fragment):
    reply = raw(repo_server.port, _infer_raw("Transfer-Encoding: chunked\r\n", chunks))
    assert reply.startswith(f"HTTP/1.1 {status} ".encode()), reply[:200]
    assert fragment in reply, reply[:300]
    assert call(repo_server.port, "GET", "/v2/health/live")[0] == 200
    assert "LimitOverrunError" not in repo_server.text() and "exception" not in repo_server.text().lower()


def test_valid_chunked_body_with_extensions_and_trailers_is_served(repo_server):
    body = json.dumps(v2_request(X)).encode()
    chunks = b"%x;ext=1\r\n" % 10 + body[:10] + b"\r\n" + b"%X\r\n" % (len(body) - 10) + body[10:] + b"\r\n"
    reply = raw(repo_server.port, _infer_raw("Transfer-Encoding: chunked\r\n", chunks + b"0\r\nX-T: 1\r\n\r\n"))
    assert reply.startswith(b"HTTP/1.1 200 "), reply[:300]


def test_ambiguous_content_length_is_refused(repo_server):
    port = repo_server.port
    body = json.dumps(v2_request(X)).encode()
    n = len(body)
    for headers in (f"Content-Length: 3\r\nContent-Length: {n}\r\n",      # conflicting: the last won (200)
                    f"Content-Length: {n}\r\nContent-Length: {n + 1}\r\n",
                    f"Content-Length: {n}, 3\r\n",
                    f"Content-Length: {n}\r\nTransfer-Encoding: chunked\r\n",  # smuggling
                    f"Transfer-Encoding: chunked\r\nContent-Length: {n}\r\n",
                    f"Content-Length : {n}\r\n",                            # whitespace before the colon
                    f"Content-Length: +{n}\r\n"):
        reply = raw(port, _infer_raw(headers, body))
        assert reply.startswith(b"HTTP/1.1 400 "), (headers, reply[:200])
    assert b"conflicting Content-Length" in raw(port, _infer_raw(f"Content-Length: 3\r\nContent-Length: {n}\r\n",
                                                                 body))
    assert b"request smuggling" in raw(port, _infer_raw(f"Content-Length: {n}\r\nTransfer-Encoding: chunked\r\n",
                                                        body))
    # identical repeated values are one value (RFC 9110 allows it; documented in docs/serving.md)
    for headers in (f"Content-Length: {n}\r\nContent-Length: {n}\r\n", f"Content-Length: {n}, {n}\r\n"):
        reply = raw(port, _infer_raw(headers, body))
        assert reply.startswith(b"HTTP/1.1 200 "), (headers, reply[:200])


ODD_NAMES = ["..", ".", "%2E%2E", "%2e", "..%2F..%2Fetc", "a%2Fb", "tiny%00", "%00", "-x", "_x", "tiny%0A", "x" * 300]


def test_odd_model_names_are_404_on_a_repository_server(repo_server):
    port = repo_server.port
    for name in ODD_NAMES:
        for method, path in (("GET", f"/v2/models/{name}/ready"), ("GET", f"/v2/models/{name}"),
                             ("GET", f"/v2/models/{name}/versions/1/ready"), ("POST", f"/v2/models/{name}/infer"),
                             ("GET", f"/v1/models/{name}"), ("POST", f"/v1/models/{name}:predict"),
                             ("POST", f"/v2/repository/models/{name}/load")):
            status, resp = call(port, method, path, v2_request(X) if method == "POST" else None, timeout=10)
            assert status == 404, (method, path, status, resp)
    status, resp = call(port, "GET", "/v2/models/../ready")
    assert status == 404 and "invalid model name '..'" in resp["error"], resp
    assert call(port, "GET", "/v2/models/tiny/ready") == (200, {"name": "tiny", "ready": True})


def test_an_engine_out_of_memory_is_a_503_not_a_500():
    """ResourceError (the engine ran out of memory, modelkit.runtime.memory) may succeed later or smaller."""
    from modelkit.errors import LoadError, ResourceError
    from modelkit.serving.errors import status_of

    assert status_of(ResourceError("onnxruntime ran out of memory")) == 503
    assert status_of(LoadError("corrupt graph")) == 500
