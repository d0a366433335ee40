"""TensorFlow Serving REST API (the subset clients use).

    GET  /v1/models/NAME[/versions/V]             model version status
    GET  /v1/models/NAME[/versions/V]/metadata    signature_def of the served version
    POST /v1/models/NAME[/versions/V]:predict     row form {"instances": [...]} -> {"predictions": [...]}
                                                  column form {"inputs": ...} -> {"outputs": ...}
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from .batcher import submit_current
from .codec import decode_tf, encode_tf
from .http import Request, Response, json_response

if TYPE_CHECKING:
    from .server import Server

_MODEL = r"/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+))?"
ROUTES: list[tuple[str, re.Pattern, str]] = [
    ("GET", re.compile(_MODEL), "status"),
    ("GET", re.compile(_MODEL + r"/metadata"), "metadata"),
    ("POST", re.compile(_MODEL + r":predict"), "predict"),
]
_TF_DTYPES = {"float32": "DT_FLOAT", "float64": "DT_DOUBLE", "float16": "DT_HALF", "int64": "DT_INT64",
              "int32": "DT_INT32", "int16": "DT_INT16", "int8": "DT_INT8", "uint8": "DT_UINT8", "bool": "DT_BOOL"}


async def status(server: "Server", req: Request, name: str, version: str | None) -> Response:
    entry = server.repo.entries.get(name)
    if entry is None:
        server.repo.get(name)  # raises the 404
    rows = [{"version": str(v), "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
            for v in sorted(entry.versions, reverse=True)]
    rows += [{"version": str(v), "state": "END", "status": {"error_code": "UNKNOWN", "error_message": reason}}
             for v, (_, reason) in sorted(entry.failed.items(), reverse=True)]
    if version is not None:
        rows = [r for r in rows if r["version"] == version]
        if not rows:
            server.repo.get(name, version)  # raises the 404
    return json_response({"model_version_status": rows})


async def metadata(server: "Server", req: Request, name: str, version: str | None) -> Response:
    v = server.repo.get(name, version)

    def tensors(specs: Any) -> dict:
        return {s.name: {"dtype": _TF_DTYPES.get(s.dtype, "DT_INVALID"), "name": s.name,
                         "tensor_shape": {"dim": [{"size": str(-1 if d is None else d), "name": ""}
                                                  for d in s.shape], "unknown_rank": False}}
                for s in specs}

    sig = {"inputs": tensors(v.signature.inputs), "outputs": tensors(v.signature.outputs),
           "method_name": "tensorflow/serving/predict"}
    return json_response({"model_spec": {"name": name, "signature_name": "", "version": str(v.version)},
                          "metadata": {"signature_def": {"signature_def": {"serving_default": sig}}}})


async def predict(server: "Server", req: Request, name: str, version: str | None) -> Response:
    v, (_inputs, form), outputs = await submit_current(server.repo, name, version,
                                                      lambda sig: decode_tf(req.body, sig))
    ordered = {n: outputs[n] for n in v.signature.output_names if n in outputs} or outputs
    return Response(200, encode_tf(ordered, form))
