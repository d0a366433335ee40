"""The server's request decoders fuzzed (malformed JSON, wrong types, huge shapes, NaN, deep nesting,
random bytes): always a 4xx with {"error": ...}, never a 500 or a hang, in-process and over HTTP."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelkit.errors import InputError
from modelkit.serving.codec import decode_tf, decode_v2
from modelkit.serving.errors import BadRequest, status_of
from modelkit.spec import Signature, TensorSpec
from tests.helpers import http

from ._build import build_onnx

EXAMPLES = int(os.environ.get("MODELKIT_CODEC_EXAMPLES", "150"))
SIGS = [Signature((TensorSpec("x", (None, 4), "float32"),), (TensorSpec("probs", (None, 3)),)),
        Signature((TensorSpec("ids", (None, 3), "int32"), TensorSpec("mask", (None, 3), "bool")),
                  (TensorSpec("y", (None,)),))]

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                    st.text(max_size=8))
json_values = st.recursive(scalars, lambda kids: st.one_of(st.lists(kids, max_size=6),
                                                            st.dictionaries(st.text(max_size=8), kids, max_size=5)),
                           max_leaves=40)
names = st.sampled_from(["x", "ids", "mask", "", "y", "x\x00", "ü"])
shapes = st.one_of(st.lists(st.integers(-3, 5), max_size=4), st.lists(st.integers(0, 2**63), max_size=3), json_values)
datatypes = st.sampled_from(["FP32", "INT32", "BOOL", "FP64", "BYTES", "fp32", None, 7])
tensor = st.fixed_dictionaries({"name": names, "shape": shapes, "datatype": datatypes},
                               optional={"data": json_values, "parameters": json_values})
v2_bodies = st.one_of(
    st.fixed_dictionaries({"inputs": st.lists(tensor, max_size=3)}, optional={"outputs": json_values,
                                                                            "parameters": json_values}),
    json_values)
tf_bodies = st.one_of(st.fixed_dictionaries({"instances": json_values}), st.fixed_dictionaries({"inputs": json_values}),
                      json_values)


def _encode(obj) -> bytes:
    return json.dumps(obj, allow_nan=True).encode()


def _refused_or_bound(call) -> None:
    try:
        bound = call()
    except (BadRequest, InputError) as exc:
        assert status_of(exc) == 400 and str(exc)
        return
    arrays = bound[0]
    assert all(isinstance(a, np.ndarray) and a.dtype.kind != "O" for a in arrays.values())


@settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(st.one_of(v2_bodies.map(_encode), st.binary(max_size=64)), st.sampled_from(SIGS),
       st.one_of(st.just({}), st.fixed_dictionaries({"inference-header-content-length": st.text(max_size=6)})))
def test_v2_decoder_answers_400_or_binds(body, sig, headers):
    _refused_or_bound(lambda: decode_v2(body, headers, sig))


@settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(st.one_of(tf_bodies.map(_encode), st.binary(max_size=64)), st.sampled_from(SIGS))
def test_tf_decoder_answers_400_or_binds(body, sig):
    _refused_or_bound(lambda: decode_tf(body, sig))


HOSTILE = {
    "deep nesting": b"[" * 200_000 + b"]" * 200_000,
    "deep objects": b'{"inputs":' + b'{"a":' * 50_000 + b"1" + b"}" * 50_001,
    "deep data": _encode({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                                      "data": json.loads("[" * 500 + "1" + "]" * 500)}]}),
    "huge shape": _encode({"inputs": [{"name": "x", "shape": [2**62, 2**62], "datatype": "FP32", "data": [1.0]}]}),
    "huge binary claim": _encode({"inputs": [{"name": "x", "shape": [2**40, 4], "datatype": "FP32",
                                              "parameters": {"binary_data_size": 2**44}}]}),
    "NaN token": b'{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[NaN,Infinity,-Infinity,1]}]}',
    "bool as float": _encode({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                                          "data": [True, False, True, False]}]}),
    "big ints": _encode({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [10**400] * 4}]}),
    "invalid utf-8": b'{"inputs": "\xff\xfe"}',
    "empty": b"",
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_bodies_in_process(case):
    _refused_or_bound(lambda: decode_v2(HOSTILE[case], {}, SIGS[0]))
    _refused_or_bound(lambda: decode_tf(HOSTILE[case], SIGS[0]))


def test_hostile_bodies_over_http_get_4xx_json(serve, tmp_path):
    repo = tmp_path / "repo" / "tiny" / "1"
    repo.mkdir(parents=True)
    build_onnx(repo / "model.onnx")
    server = serve(tmp_path / "repo")
    for case, body in HOSTILE.items():
        for path in ("/v2/models/tiny/infer", "/v1/models/tiny:predict"):
            status, _, data = http(server.port, "POST", path, body, {"Content-Type": "application/json"}, timeout=30)
            if case == "NaN token" and path.startswith("/v2"):
                assert status == 200, (case, data[:200])  # NaN is a float: answered, not refused
                continue
            assert 400 <= status < 500, (case, path, status, data[:300])
            assert "error" in json.loads(data), (case, data[:200])
    garbage = [b"\x00\xff" * 50, b"GET / HTTP/9.9\r\n\r\n",
               b"POST /v2/models/tiny/infer HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
               b"POST /v2/models/tiny/infer HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"]
    import socket

    for raw in garbage:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            s.sendall(raw + b"\r\n\r\n")
            reply = s.recv(4096)
        assert reply.startswith(b"HTTP/1.1 4"), (raw[:40], reply[:100])
    assert http(server.port, "GET", "/v2/health/ready")[0] == 200  # still serving
