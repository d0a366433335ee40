"""OpenVINO engine: an IR (model.xml + model.bin) compiled by OpenVINO's Core for the CPU.

Precision is pinned to f32 (INFERENCE_PRECISION_HINT): OpenVINO's default on CPUs with AMX or AVX-512 bf16
(Sapphire Rapids and later) runs the model in bf16 silently; measured on MobileNetV2, its logits moved by
0.15 with no warning. `precision="bf16"` (or "f16") opts into the lower precision, knowingly.
PERFORMANCE_HINT is LATENCY by default (one request at a time, as predict runs), `hint="throughput"` for many
concurrent requests; `threads` sets INFERENCE_NUM_THREADS.

Both files are checked before OpenVINO reads them (modelkit.safety.openvino): sizes, no DTD, every
constant's range inside the .bin. The .bin passed to OpenVINO is the one checked, never one the .xml names.

Every model is compiled on one Core for the process (`core()`): OpenVINO's CPU plugin gives the thread that first
compiles on a Core an alternate signal stack and, when that Core goes, frees it and puts back the stack it found.
With a Core per model, models dropped out of load order (a server swapping versions) left the thread on a freed
stack, and the next Python signal handler (Ctrl-C, SIGTERM) crashed the process with SIGSEGV.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Collection

import numpy as np

from .. import manifest as _manifest
from .._require import require
from ..errors import LoadError, first_line
from ..formats import Format, openvino_files
from ..spec import Signature, TensorSpec
from .base import Model, order_outputs, parse_device
from .memory import guard_load

PRECISIONS = {"f32": "f32", "fp32": "f32", "float32": "f32", "bf16": "bf16", "bfloat16": "bf16",
              "f16": "f16", "fp16": "f16", "float16": "f16"}
HINTS = {"latency": "LATENCY", "throughput": "THROUGHPUT", "cumulative_throughput": "CUMULATIVE_THROUGHPUT"}
_DTYPES = {"float32", "float64", "float16", "int64", "int32", "int16", "int8", "uint8", "uint16", "bool"}


def config_for(precision: str = "f32", hint: str = "latency", threads: int | None = None) -> dict[str, Any]:
    """The compile_model config: precision pinned (f32 unless asked), performance hint, threads."""
    p = PRECISIONS.get(str(precision).strip().lower())
    if p is None:
        raise LoadError(f"unknown OpenVINO precision '{precision}'; valid: f32 (default), bf16, f16")
    h = HINTS.get(str(hint).strip().lower().replace("-", "_"))
    if h is None:
        raise LoadError(f"unknown OpenVINO performance hint '{hint}'; valid: {', '.join(HINTS)}")
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": p, "PERFORMANCE_HINT": h}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    return config


_CORE: list[Any] = []
_CORE_LOCK = threading.Lock()


def core() -> Any:
    """The process's one OpenVINO Core (made on first use; never dropped, see the module docstring). A Core is
    thread-safe; a compile's settings go in its config, never on the Core."""
    with _CORE_LOCK:
        if not _CORE:
            _CORE.append(require("openvino", "openvino").Core())
        return _CORE[0]


def cpu_capabilities() -> list[str]:
    """OpenVINO's CPU OPTIMIZATION_CAPABILITIES here ('FP32', 'INT8', 'BF16' with AVX512_BF16 or AMX, ...). A
    precision hint the CPU has no arithmetic for is ignored silently: the model runs in f32."""
    return [str(c) for c in core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")]


def computes_bf16() -> bool:
    """Whether OpenVINO's CPU plugin computes in bf16 here ('BF16' among its capabilities)."""
    return "BF16" in cpu_capabilities()


def ov_errors() -> tuple[type[BaseException], ...]:
    """What OpenVINO raises for a bad model or a failed run: RuntimeError, and its pybind11 failures, which
    derive from Exception only (OpConversionFailure, OpValidationFailure, GeneralFailure, ...)."""
    from openvino import _pyopenvino as state

    names = ("GeneralFailure", "InitializationFailure", "NotImplementedFailure", "OpConversionFailure",
             "OpValidationFailure")
    found = tuple(getattr(state, n) for n in names if isinstance(getattr(state, n, None), type))
    return (RuntimeError, ValueError, TypeError, *found)


class OpenVinoModel(Model):
    format = Format.OPENVINO
    engine = "openvino"

    def __init__(self, path: Path, compiled: Any, config: dict[str, Any], model: Any = None):
        self.compiled = compiled
        self.config = config
        m = _manifest.read(path)
        # compiling merges a fused node's names into a port's (an int32 input cast to int64 by torch.onnx is also
        # '_to_copy'): each port keeps the name the IR gives it
        known = {p.get_any_name() for p in (*model.inputs, *model.outputs) if p.get_names()} if model else set()
        ins = [(port, _spec(port, known)) for port in compiled.inputs]
        outs = {(spec := _spec(port, known)).name: (port, spec) for port in compiled.outputs}
        names = order_outputs(list(outs), m.sig.output_names if m else None)
        super().__init__(path, Signature(tuple(s for _, s in ins), tuple(outs[n][1] for n in names)))
        self._output_ports = [(n, outs[n][0]) for n in names]
        self._local = threading.local()  # one infer request per thread: a request is not thread-safe

    @property
    def precision(self) -> str:
        """The precision OpenVINO compiled for: 'f32' unless precision= (or the IR) asked otherwise, and 'f32' on a
        CPU without arithmetic for the one asked (bf16 without AVX512_BF16 or AMX): what it runs, not what was
        asked."""
        return str(self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name())

    def _request(self) -> Any:
        req = getattr(self._local, "request", None)
        if req is None:
            req = self._local.request = self.compiled.create_infer_request()
        return req

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            results = self._request().infer(inputs)  # outputs are copied out of the request (share_outputs=False)
        except ov_errors() as exc:  # inputs were validated: a failure here is the model's
            first = first_line(exc)
            raise LoadError(f"{self.path}: OpenVINO failed running this model: {first}") from exc
        return {name: np.asarray(results[port]) for name, port in self._output_ports}


def _spec(port: Any, known: Collection[str] = ()) -> TensorSpec:
    names = sorted(port.get_names())
    if not names:
        raise LoadError(f"an OpenVINO tensor has no name (port {port}); modelkit binds tensors by name")
    name = next((n for n in names if n in known), port.get_any_name())
    try:
        dtype = np.dtype(port.get_element_type().to_dtype()).name
    except (RuntimeError, TypeError, ValueError) as exc:
        raise LoadError(f"tensor '{name}' has an element type numpy has no dtype for "
                        f"({port.get_element_type()})") from exc
    if dtype not in _DTYPES:
        raise LoadError(f"tensor '{name}' has unsupported type {port.get_element_type()}")
    pshape = port.get_partial_shape()
    if pshape.rank.is_dynamic:
        raise LoadError(f"tensor '{name}' has a dynamic rank; modelkit needs the rank of every tensor")
    shape = tuple(d.get_length() if d.is_static else None for d in pshape)
    return TensorSpec(name, shape, dtype)


def _recorded_precision(model: Any) -> str:
    """The precision an IR records in rt_info (runtime_options / INFERENCE_PRECISION_HINT): 'bf16' for the IRs
    `--quantize bf16` writes; 'f32' when it records none, or one this engine does not know."""
    key = ["runtime_options", "INFERENCE_PRECISION_HINT"]
    if not model.has_rt_info(key):
        return "f32"
    return recorded(str(model.get_rt_info(key).astype(str)))


def recorded(value: str | None) -> str:
    """The precision an IR's INFERENCE_PRECISION_HINT value names, as this engine runs it ('bf16', 'f16'); 'f32'
    for none or one it does not know. One reading for the engine and the packagers (which read the XML)."""
    return PRECISIONS.get((value or "").strip().lower(), "f32")


@guard_load("openvino")
def load(path: Path, device: str = "cpu", threads: int | None = None, precision: str | None = None,
         hint: str = "latency", **options: Any) -> OpenVinoModel:
    """precision: 'f32', 'bf16' or 'f16' (lossy, knowingly); None (default): f32 pinned, unless the IR records
    another (`modelkit convert --to openvino --quantize bf16` writes bf16 there, accuracy-gated); hint: 'latency'
    (default) or 'throughput'; threads: INFERENCE_NUM_THREADS."""
    from ..safety.openvino import check_openvino_ir

    parse_device(device, ("cpu",))
    config_for(precision or "f32", hint, threads)  # bad options fail before any file is read
    path = Path(path)
    xml, bin_ = openvino_files(path)
    check_openvino_ir(xml, bin_, folder=path if path.is_dir() else None)
    try:
        model = core().read_model(str(xml), str(bin_))
        config = config_for(precision or _recorded_precision(model), hint, threads)
        compiled = core().compile_model(model, "CPU", config)
        return OpenVinoModel(path, compiled, config, model)
    except LoadError:
        raise
    except ov_errors() as exc:
        first = first_line(exc)
        raise LoadError(f"{path}: OpenVINO could not load this model: {first}") from exc
