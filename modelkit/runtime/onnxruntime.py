"""ONNX engine: onnxruntime with an explicit, ordered provider list (never a silent fallback)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .. import manifest as _manifest
from .._require import require
from ..errors import LoadError, first_line
from ..formats import Format
from ..spec import Signature, TensorSpec
from .base import Model, order_outputs, parse_device
from .memory import guard_load

_ORT_TYPES = {
    "tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16",
    "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int16)": "int16", "tensor(int8)": "int8",
    "tensor(uint8)": "uint8", "tensor(uint16)": "uint16", "tensor(bool)": "bool",
}


def providers_for(kind: str, index: int) -> list[Any]:
    """The provider list for a device; CUDA must be available, or it is an error."""
    import onnxruntime as ort

    if kind == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise LoadError("device 'cuda' needs onnxruntime with the CUDA execution provider "
                        f"(available here: {', '.join(ort.get_available_providers())}); "
                        "install onnxruntime-gpu on a CUDA machine")
    return [("CUDAExecutionProvider", {"device_id": index})]


def ort_errors() -> tuple[type[BaseException], ...]:
    """onnxruntime's own exception types (pybind11 classes deriving from Exception, not RuntimeError)."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    names = ("Fail", "InvalidArgument", "InvalidGraph", "InvalidProtobuf", "NoModel", "NoSuchFile", "NotFound",
             "NotImplemented", "RuntimeException", "EngineError", "EPFail", "ModelRequiresCompilation")
    found = tuple(getattr(state, n) for n in names if isinstance(getattr(state, n, None), type))
    return (RuntimeError, ValueError, *found)


def check_external_data(path: Path) -> None:
    """Refuse ONNX external-data locations that leave the model's folder (absolute, '..', symlinks)."""
    from ..safety import check_onnx_external_data

    check_onnx_external_data(path)


class OnnxModel(Model):
    format = Format.ONNX
    engine = "onnxruntime"

    def __init__(self, path: Path, session: Any):
        self.session = session
        m = _manifest.read(path)
        specs_in = tuple(_spec(i) for i in session.get_inputs())
        outs = {o.name: _spec(o) for o in session.get_outputs()}
        names = order_outputs(list(outs), m.sig.output_names if m else None)
        super().__init__(path, Signature(specs_in, tuple(outs[n] for n in names)))
        self._output_names = names
        # The session's C++ run, past InferenceSession.run's Python layer: that layer re-checks the input names
        # (Signature.bind has, with typed errors) and retries on a failed execution provider (modelkit never
        # falls back silently); skipping it saves ~2 us a call, so predict costs about what a raw session.run
        # does (docs/performance.md, "Runtime overhead"). Sessions without it keep the public run.
        native = getattr(session, "_sess", None)
        self._call = native.run if callable(getattr(native, "run", None)) else None

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            call = self._call
            results = (call(self._output_names, inputs, None) if call is not None
                       else self.session.run(self._output_names, inputs))
        except ort_errors() as exc:  # inputs were validated: a failure here is the model's (corrupt graph)
            first = first_line(exc)
            raise LoadError(f"{self.path}: onnxruntime failed running this model: {first}") from exc
        return dict(zip(self._output_names, results))


def _spec(node: Any) -> TensorSpec:
    if node.type not in _ORT_TYPES:
        raise LoadError(f"tensor '{node.name}' has unsupported type {node.type}")
    shape = tuple(d if isinstance(d, int) and d > 0 else None for d in (node.shape or []))
    return TensorSpec(node.name, shape, _ORT_TYPES[node.type])


@guard_load("onnxruntime")
def load(path: Path, device: str = "cpu", threads: int | None = None, **options: Any) -> OnnxModel:
    kind, index = parse_device(device, ("cpu", "cuda"))
    ort = require("onnxruntime", "run-onnx")
    check_external_data(path)
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 4  # a failed run's error is raised, typed: its log line on stderr said it twice
    try:
        session = ort.InferenceSession(str(path), sess_options=so, providers=providers_for(kind, index))
        return OnnxModel(path, session)
    except LoadError:
        raise
    except ort_errors() as exc:  # onnxruntime's pybind11 errors (Fail, InvalidGraph, ...) are not RuntimeErrors;
        # a UnicodeDecodeError (a ValueError) comes from tensor names or types that are not UTF-8
        first = first_line(exc)
        raise LoadError(f"{path}: onnxruntime could not load this model: {first}") from exc
