"""Open Inference Protocol v2 (KServe v2 / Triton HTTP) REST endpoints.

    GET  /v2                                      server metadata
    GET  /v2/health/live | /v2/health/ready       200 when true, 503 when not ready
    GET  /v2/models/NAME[/versions/V]             model metadata (variable dims as -1)
    GET  /v2/models/NAME[/versions/V]/ready
    POST /v2/models/NAME[/versions/V]/infer       typed tensors, JSON or binary tensor data
    POST /v2/repository/index                     every version and its state (failed loads too)
    POST /v2/repository/models/NAME/load          load new versions of NAME now (hot-swap)
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from .._version import __version__
from .batcher import submit_current
from .codec import decode_v2, encode_v2, v2_datatype, v2_shape
from .errors import BadRequest
from .http import Request, Response, json_response

if TYPE_CHECKING:
    from .server import Server

_MODEL = r"/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?"
ROUTES: list[tuple[str, re.Pattern, str]] = [
    ("GET", re.compile(r"/v2/?"), "server_metadata"),
    ("GET", re.compile(r"/v2/health/live"), "live"),
    ("GET", re.compile(r"/v2/health/ready"), "ready"),
    ("GET", re.compile(_MODEL), "model_metadata"),
    ("GET", re.compile(_MODEL + r"/ready"), "model_ready"),
    ("POST", re.compile(_MODEL + r"/infer"), "infer"),
    ("POST", re.compile(r"/v2/repository/index"), "repository_index"),
    ("POST", re.compile(r"/v2/repository/models/(?P<name>[^/]+)/load"), "load"),
]
EXTENSIONS = ["binary_tensor_data", "model_repository", "statistics_metrics"]


async def server_metadata(server: "Server", req: Request, **_: Any) -> Response:
    return json_response({"name": "modelkit", "version": __version__, "extensions": EXTENSIONS})


async def live(server: "Server", req: Request, **_: Any) -> Response:
    return json_response({"live": True})


async def ready(server: "Server", req: Request, **_: Any) -> Response:
    ok = server.ready()
    return json_response({"ready": ok}, 200 if ok else 503)


async def model_metadata(server: "Server", req: Request, name: str, version: str | None) -> Response:
    v = server.repo.get(name, version)
    entry = server.repo.entries[name]
    sig = v.signature
    return json_response({
        "name": name, "versions": [str(x) for x in sorted(entry.versions)], "platform": v.platform,
        "inputs": [{"name": s.name, "datatype": v2_datatype(s.dtype), "shape": v2_shape(s)} for s in sig.inputs],
        "outputs": [{"name": s.name, "datatype": v2_datatype(s.dtype), "shape": v2_shape(s)} for s in sig.outputs],
        "parameters": {"default_version": str(entry.default.version if entry.default else ""),
                       "max_batch_size": v.batcher.max_batch,
                       "failed_versions": {str(k): r for k, (_, r) in sorted(entry.failed.items())}},
    })


async def model_ready(server: "Server", req: Request, name: str, version: str | None) -> Response:
    server.repo.get(name, version)  # 404 for an unknown model or version, 503 while none is ready
    return json_response({"name": name, "ready": True})


async def infer(server: "Server", req: Request, name: str, version: str | None) -> Response:
    v, (_inputs, plan), outputs = await submit_current(
        server.repo, name, version, lambda sig: decode_v2(req.body, req.headers, sig))
    body, headers = encode_v2(outputs, v.signature, plan, name, v.version)
    ctype = "application/octet-stream" if headers else "application/json"
    return Response(200, body, ctype, headers)


async def repository_index(server: "Server", req: Request, **_: Any) -> Response:
    return json_response(server.repo.index())


async def load(server: "Server", req: Request, name: str) -> Response:
    if server.repo.roots == []:
        raise BadRequest("this server serves single artifacts; load needs a repository folder (serve DIR)")
    errors = await server.repo.rescan(name)
    entry = server.repo.entries[name]
    if errors and entry.default is None:
        raise BadRequest("; ".join(errors))
    body = {"name": name, "default_version": str(entry.default.version) if entry.default else None,
            "loaded": [str(v) for v in sorted(entry.versions)]}
    if errors:
        body["error"] = "; ".join(errors)
    return json_response(body, 400 if errors else 200)
