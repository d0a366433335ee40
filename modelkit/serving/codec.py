"""JSON <-> numpy for both protocols, validated against the model's Signature before any engine runs.

Open Inference Protocol v2: typed tensors {name, shape, datatype, data}, plus the binary tensor data
extension (Inference-Header-Content-Length) that the Triton clients use by default.
TF Serving REST: row form {"instances": [...]} and column form {"inputs": ...}.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..spec import Signature, TensorSpec
from .errors import BadRequest

V2_TO_NP = {"BOOL": "bool", "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32", "UINT64": "uint64",
            "INT8": "int8", "INT16": "int16", "INT32": "int32", "INT64": "int64", "FP16": "float16",
            "FP32": "float32", "FP64": "float64", "BYTES": "object"}
NP_TO_V2 = {v: k for k, v in V2_TO_NP.items()}
HEADER_LENGTH = "inference-header-content-length"
MAX_RANK = 32  # numpy's limit
MAX_ELEMENTS = 2**31 - 1  # per tensor, zero dimensions counted as 1: no overflow, no huge empty views


@dataclass
class V2Plan:
    """What a validated v2 request asks of the response: which outputs, each binary or not, and its id."""

    outputs: dict[str, bool] | None  # None: every output of the model, binary when binary_all
    binary_all: bool = False
    id: Any = None
    has_id: bool = False


def v2_datatype(dtype: str) -> str:
    return NP_TO_V2.get(np.dtype(dtype).name, "BYTES")


def v2_shape(spec: TensorSpec) -> list[int]:
    return [-1 if d is None else d for d in spec.shape]


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from exc
    except RecursionError as exc:  # "[[[[...": json nests by recursion; found by fuzzing (was a 500)
        raise BadRequest("request body nests too deeply") from exc


# ----------------------------------------------------------------------------------------- v2 request

def decode_v2(body: bytes, headers: dict[str, str], sig: Signature) -> tuple[dict[str, np.ndarray], V2Plan]:
    """Decode and validate a whole v2 infer request (inputs, parameters, requested outputs) against the
    signature, before anything runs: returns inputs bound to the signature and the response plan."""
    binary = b""
    if HEADER_LENGTH in headers:
        try:
            n = int(headers[HEADER_LENGTH])
        except ValueError as exc:
            raise BadRequest(f"bad {HEADER_LENGTH} header") from exc
        if not 0 <= n <= len(body):
            raise BadRequest(f"{HEADER_LENGTH} {n} is larger than the body ({len(body)} bytes)")
        body, binary = body[:n], body[n:]
    req = parse_json(body)
    if not isinstance(req, dict) or not isinstance(req.get("inputs"), list):
        raise BadRequest("a v2 infer request is a JSON object with an 'inputs' list")
    plan = _plan(req, sig)
    specs = {s.name: s for s in sig.inputs}
    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for t in req["inputs"]:
        if not isinstance(t, dict) or not isinstance(t.get("name"), str):
            raise BadRequest("each input is an object with 'name', 'shape', 'datatype' and 'data'")
        name = t["name"]
        if name not in specs:
            raise BadRequest(f"unknown input '{name}'; the model's inputs are {sig.input_names}")
        if name in arrays:
            raise BadRequest(f"input '{name}' is given twice")
        spec = specs[name]
        shape = _shape(t.get("shape"), name)
        datatype = t.get("datatype")
        want = v2_datatype(spec.dtype)
        if datatype != want:
            raise BadRequest(f"input '{name}': datatype {datatype!r} does not match the model's {want} "
                             f"({spec.dtype})")
        size = _parameters(t, f"input '{name}'").get("binary_data_size")
        if size is not None:
            arr, offset = _from_binary(binary, offset, size, spec, shape)
        elif "data" in t:
            arr = _from_json(t["data"], spec, shape)
        else:
            raise BadRequest(f"input '{name}' has neither 'data' nor a binary_data_size parameter")
        arrays[name] = arr
    if offset != len(binary):
        raise BadRequest(f"{len(binary) - offset} bytes of binary data are not claimed by any input")
    return sig.bind(arrays), plan


def _parameters(obj: dict, where: str) -> dict:
    """The 'parameters' object of a request, an input or an output ({} when absent or null)."""
    params = obj.get("parameters")
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise BadRequest(f"{where}: 'parameters' must be an object, got {type(params).__name__}")
    return params


def _flag(params: dict, key: str, where: str, default: bool) -> bool:
    value = params.get(key, default)
    if not isinstance(value, bool):
        raise BadRequest(f"{where}: parameter '{key}' must be true or false, got {value!r:.40}")
    return value


def _plan(req: dict, sig: Signature) -> V2Plan:
    """Validate the request-level parameters and the requested outputs."""
    binary_all = _flag(_parameters(req, "request"), "binary_data_output", "request", False)
    wanted = req.get("outputs")
    if wanted is None:
        return V2Plan(None, binary_all, req.get("id"), "id" in req)
    if not isinstance(wanted, list):
        raise BadRequest("'outputs' must be a list of {'name': ...} objects")
    outputs: dict[str, bool] = {}
    for o in wanted:
        name = o.get("name") if isinstance(o, dict) else None
        if not isinstance(name, str) or name not in sig.output_names:
            raise BadRequest(f"unknown output {name!r:.100}; the model's outputs are {sig.output_names}")
        if name in outputs:
            raise BadRequest(f"output '{name}' is requested twice")
        assert isinstance(o, dict)
        outputs[name] = _flag(_parameters(o, f"output '{name}'"), "binary_data", f"output '{name}'", binary_all)
    return V2Plan(outputs, binary_all, req.get("id"), "id" in req)


def _shape(shape: Any, name: str) -> tuple[int, ...]:
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape):
        raise BadRequest(f"input '{name}': 'shape' must be a list of non-negative integers, got {shape!r:.200}")
    if len(shape) > MAX_RANK:
        raise BadRequest(f"input '{name}': rank {len(shape)} is over the limit of {MAX_RANK}")
    count = 1
    for d in shape:
        count *= max(d, 1)
        if count > MAX_ELEMENTS:
            raise BadRequest(f"input '{name}': shape {shape!r:.200} is too large (over {MAX_ELEMENTS} elements, "
                             "counting zero dimensions as 1)")
    return tuple(shape)


def _from_binary(buf: bytes, offset: int, size: Any, spec: TensorSpec,
                 shape: tuple[int, ...]) -> tuple[np.ndarray, int]:
    dtype = np.dtype(spec.dtype)
    if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(buf):
        raise BadRequest(f"input '{spec.name}': binary_data_size {size!r} runs past the end of the body")
    count = math.prod(shape)
    if size != count * dtype.itemsize:
        raise BadRequest(f"input '{spec.name}': shape {list(shape)} needs {count * dtype.itemsize} bytes of "
                         f"{v2_datatype(spec.dtype)}, got {size}")
    arr = np.frombuffer(buf, dtype=dtype.newbyteorder("<"), count=count, offset=offset).astype(dtype)
    return arr.reshape(shape), offset + size


def _from_json(data: Any, spec: TensorSpec, shape: tuple[int, ...]) -> np.ndarray:
    arr = to_array(data, spec)
    count = math.prod(shape)
    if arr.size != count:
        raise BadRequest(f"input '{spec.name}': shape {list(shape)} has {count} elements but 'data' has "
                         f"{arr.size}")
    return arr.reshape(shape)


def to_array(data: Any, spec: TensorSpec) -> np.ndarray:
    """A JSON value as an array of the spec's dtype; values of the wrong kind are a 400, never a cast."""
    try:
        raw = np.asarray(data)
    except (ValueError, OverflowError, RecursionError, TypeError) as exc:
        raise BadRequest(f"input '{spec.name}': data is not a rectangular array of numbers ({exc})") from exc
    want = np.dtype(spec.dtype)
    kind = raw.dtype.kind
    ok = {"f": "fiu", "i": "iu", "u": "iu", "b": "b"}.get(want.kind, "")
    if raw.size and kind not in ok:
        what = {"U": "strings", "O": "mixed or nested values", "b": "booleans", "f": "floats"}.get(kind, kind)
        raise BadRequest(f"input '{spec.name}': expected {want.name} values, got {what}")
    if want.kind in "iu" and raw.size:
        info = np.iinfo(want)
        if raw.min() < info.min or raw.max() > info.max:
            raise BadRequest(f"input '{spec.name}': values out of range for {want.name}")
    try:
        return raw.astype(want)
    except (ValueError, OverflowError) as exc:
        raise BadRequest(f"input '{spec.name}': cannot read data as {want.name} ({exc})") from exc


# ---------------------------------------------------------------------------------------- v2 response

def encode_v2(outputs: dict[str, np.ndarray], sig: Signature, plan: V2Plan, model: str, version: int
              ) -> tuple[bytes, dict[str, str]]:
    """The v2 response body and extra headers; binary outputs where the (validated) plan asks for them."""
    if plan.outputs is None:
        per_output = {n: plan.binary_all for n in outputs}
    else:
        missing = [n for n in plan.outputs if n not in outputs]
        if missing:  # the engine did not produce an output its signature lists: a server-side failure
            raise RuntimeError(f"the model produced no output {missing}; it produced {sorted(outputs)}")
        per_output = plan.outputs
    specs = {s.name: s for s in sig.outputs}
    tensors, blobs = [], []
    for name, use_binary in per_output.items():
        arr = outputs[name]
        dtype = specs[name].dtype if name in specs else arr.dtype.name
        t: dict[str, Any] = {"name": name, "shape": list(arr.shape), "datatype": v2_datatype(dtype)}
        if use_binary:
            blob = np.ascontiguousarray(arr, dtype=np.dtype(arr.dtype).newbyteorder("<")).tobytes()
            t["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            t["data"] = arr.ravel().tolist()
        tensors.append(t)
    resp: dict[str, Any] = {"model_name": model, "model_version": str(version), "outputs": tensors}
    if plan.has_id:
        resp["id"] = plan.id
    head = json.dumps(resp, separators=(",", ":")).encode()
    if not blobs:
        return head, {}
    return head + b"".join(blobs), {"Inference-Header-Content-Length": str(len(head))}


# ---------------------------------------------------------------------------------------- TF Serving

def decode_tf(body: bytes, sig: Signature) -> tuple[dict[str, np.ndarray], str]:
    """Decode a TF Serving predict request; returns bound inputs and 'row' or 'col'."""
    req = parse_json(body)
    if not isinstance(req, dict) or ("instances" in req) == ("inputs" in req):
        raise BadRequest("a predict request is a JSON object with exactly one of 'instances' or 'inputs'")
    names = sig.input_names
    if "instances" in req:
        rows = req["instances"]
        if not isinstance(rows, list) or not rows:
            raise BadRequest("'instances' must be a non-empty list")
        if all(isinstance(r, dict) for r in rows):
            cols = {}
            for n in {k for r in rows for k in r}:
                if any(n not in r for r in rows):
                    raise BadRequest(f"input '{n}' is missing from some instances")
                cols[n] = [r[n] for r in rows]
        elif len(names) == 1 and not any(isinstance(r, dict) for r in rows):
            cols = {names[0]: rows}
        else:
            raise BadRequest(f"the model has inputs {names}: each instance must be an object keyed by input name")
        form = "row"
    else:
        inputs = req["inputs"]
        if isinstance(inputs, dict):
            cols = inputs
        elif len(names) == 1:
            cols = {names[0]: inputs}
        else:
            raise BadRequest(f"the model has inputs {names}: 'inputs' must be an object keyed by input name")
        form = "col"
    specs = {s.name: s for s in sig.inputs}
    unknown = [n for n in cols if n not in specs]
    if unknown:
        raise BadRequest(f"unknown inputs {sorted(unknown)}; the model's inputs are {names}")
    return sig.bind({n: to_array(v, specs[n]) for n, v in cols.items()}), form


def encode_tf(outputs: dict[str, np.ndarray], form: str) -> bytes:
    names = list(outputs)
    if form == "row":
        n = len(next(iter(outputs.values())))
        if len(names) == 1:
            preds: Any = outputs[names[0]].tolist()
        else:
            lists = {k: v.tolist() for k, v in outputs.items()}
            preds = [{k: lists[k][i] for k in names} for i in range(n)]
        return json.dumps({"predictions": preds}, separators=(",", ":")).encode()
    body = outputs[names[0]].tolist() if len(names) == 1 else {k: v.tolist() for k, v in outputs.items()}
    return json.dumps({"outputs": body}, separators=(",", ":")).encode()
