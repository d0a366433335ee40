"""ExecuTorch engine for .pte programs: executorch.runtime (the C++ runtime's Python bindings, XNNPACK kernels).

`Runtime.get().load_program(path).load_method("forward")`, inputs passed in the Signature's order. A .pte has no
tensor names: the Signature is read from the program's constant method `modelkit_signature` (written by
modelkit.converters.keras_executorch), else from the manifest beside it. ExecuTorch plans memory for a maximum
batch (`modelkit_max_batch`); a larger batch runs in slices of that size, concatenated. Other open dimensions have a
range (`modelkit_dim_ranges`): a size outside it is a ShapeError (the runtime would fail resizing past its plan).
Open dims the program computes as one size (`modelkit_tied_dims`: a graph network's node features (N, F) and
adjacency (N, N)) must agree: the runtime does not check it, and computes garbage where they differ (nc185).
The program is verified by the runtime as it loads (flatbuffer and internal consistency), so a damaged file is a
LoadError; the value indices the runtime trusts (one past its plan aborts the process at execute) are checked before it
(modelkit.safety.executorch).
CPU only. The runtime's own diagnostics (cpuinfo probes, kernel check failures) are kept off the terminal; the
error it returns is turned into one typed line.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from .._quiet import StderrSink, engine_chatter_swallowed
from .._require import require
from ..errors import LoadError, ShapeError
from ..formats import Format
from ..spec import Signature
from .base import Model, parse_device
from .memory import guard_load
from .torchscript import resolve_signature

SIGNATURE_METHOD, MAX_BATCH_METHOD = "modelkit_signature", "modelkit_max_batch"  # the edge writes them
DIM_RANGES_METHOD = "modelkit_dim_ranges"  # {"input:axis": [min, max]} of the open dims other than the batch
TIED_DIMS_METHOD = "modelkit_tied_dims"  # [["input:axis", ...], ...]: open dims the program computes as one size


class ExecuTorchModel(Model):
    format = Format.EXECUTORCH
    engine = "executorch"

    def __init__(self, path: Path, method: Any, signature: Signature, max_batch: int | None,
                 dim_ranges: dict[tuple[str, int], tuple[int, int]] | None = None,
                 tied: list[list[tuple[str, int]]] | None = None):
        super().__init__(path, signature)
        self.method = method
        self.max_batch = max_batch
        self.dim_ranges = dim_ranges or {}  # (input, axis) -> (min, max): the sizes memory was planned for
        self.tied = tied or []  # groups of (input, axis) the program takes at one size
        self._chatter = StderrSink()  # the runtime's log of a failing call, kept for its error line
        self._ran: set[tuple] = set()  # input shapes that ran: the runtime fails by shape, so these run unguarded

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = self.signature.input_names
        self._check_tied(inputs)
        for (name, axis), (low, high) in self.dim_ranges.items():
            size = inputs[name].shape[axis] if name in inputs and inputs[name].ndim > axis else None
            if size is not None and not low <= size <= high:
                raise ShapeError(f"input '{name}' dimension {axis} is {size}: {self.path.name} takes {low}..{high} "
                                 f"there (ExecuTorch plans memory for it at conversion; max_length=N, --max-length N "
                                 f"converts for more)")
        n = inputs[names[0]].shape[0] if names and inputs[names[0]].ndim else 0
        if self.max_batch is not None and n > self.max_batch:  # memory is planned for max_batch: run in slices
            if not all(s.shape and s.shape[0] is None for s in (*self.signature.inputs, *self.signature.outputs)):
                raise ShapeError(f"{self.path.name} takes batches of at most {self.max_batch} (ExecuTorch plans "
                                 f"memory for it at conversion; max_batch=N converts for more); got {n}")
            parts = [self._run_once({k: v[i:i + self.max_batch] for k, v in inputs.items()})
                     for i in range(0, n, self.max_batch)]
            return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        return self._run_once(inputs)

    def _check_tied(self, inputs: dict[str, np.ndarray]) -> None:
        """ShapeError where dims the program takes at one size differ."""
        for group in self.tied:
            sizes = [(name, axis, inputs[name].shape[axis]) for name, axis in group
                     if name in inputs and inputs[name].ndim > axis]
            if len({size for _, _, size in sizes}) > 1:
                said = ", ".join(f"'{n}' dimension {a} is {size}" for n, a, size in sizes)
                raise ShapeError(f"{said}: {self.path.name} takes them at one size (the model computes them "
                                 "together, and ExecuTorch does not check it)")

    def _run_once(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        names = self.signature.input_names
        args = [torch.from_numpy(np.ascontiguousarray(inputs[n]).copy()) for n in names]
        shapes = tuple(tuple(a.shape) for a in args)
        said: list[str] = []
        try:
            if shapes in self._ran:  # descriptor 2 redirected costs ~20 us a call: only for sizes not run before
                outs = self.method.execute(args)
            else:
                with self._chatter.swallowed() as said:
                    outs = self.method.execute(args)
                if len(self._ran) < 256:
                    self._ran.add(shapes)
        except RuntimeError as exc:  # inputs were validated against the Signature: a failure here is the program's
            shapes = ", ".join(f"'{n}' {tuple(inputs[n].shape)}" for n in names)
            raise LoadError(f"{self.path}: ExecuTorch failed running this program on {shapes}: "
                            f"{exc}{_why(said, str(exc))}") from exc
        out_names = self.signature.output_names
        if len(outs) != len(out_names):
            raise LoadError(f"{self.path.name} returned {len(outs)} outputs, its signature names {len(out_names)}: "
                            f"{out_names}")
        # copies: an output lives in the program's planned memory, which the next call overwrites
        return {n: np.array(o.numpy() if hasattr(o, "numpy") else o, copy=True) for n, o in zip(out_names, outs)}


@guard_load("executorch")
def load(path: Path, device: str = "cpu", threads: int | None = None, **options: Any) -> ExecuTorchModel:
    from ..safety.executorch import check_program

    parse_device(device, ("cpu",))  # 'cuda' is a typed error: this engine runs on the CPU only
    runtime = import_runtime()
    check_program(path)
    try:
        with engine_chatter_swallowed() as said:
            program = runtime.Runtime.get().load_program(str(path))
            names = set(program.method_names)
            if "forward" not in names:
                raise LoadError(f"{path}: an ExecuTorch program without a 'forward' method (it has: "
                                f"{', '.join(sorted(names)) or 'none'})")
            method = program.load_method("forward")
            embedded = _constant(program, SIGNATURE_METHOD) if SIGNATURE_METHOD in names else None
            max_batch = _constant(program, MAX_BATCH_METHOD) if MAX_BATCH_METHOD in names else None
            ranges = _constant(program, DIM_RANGES_METHOD) if DIM_RANGES_METHOD in names else None
            tied = _constant(program, TIED_DIMS_METHOD) if TIED_DIMS_METHOD in names else None
    except (RuntimeError, ValueError, OSError) as exc:  # the runtime's verifier refuses a damaged program
        raise LoadError(f"{path}: ExecuTorch could not load this program: {exc}{_why(said, str(exc))}") from exc
    return ExecuTorchModel(path, method, _signature(path, embedded), _int(max_batch), _ranges(path, ranges),
                           _tied(path, tied))


# ExecuTorch's error codes (runtime/core/error.h) that a load names only by number
_CODES = {0x14: "operator missing: the runtime has no kernel for an op the program runs outside its delegate"}
_NOISE = ("cpuinfo_utils",)  # lines every load may log on a machine without /sys/devices/soc0 (no failure of its)


def _why(said: list[str], message: str = "") -> str:
    """The runtime's first logged failure, for an exception that gives only a code ("Failed to load method
    forward, error: 0x:1"): " (XNNCompiler: Failed to create StaticConstantPad node 11 with code: ...)", " (tensor_impl:
    Attempted to resize a bounded tensor with a maximum capacity of ...)"; else
    what the code means where it is one of _CODES."""
    for line in "".join(said).splitlines():
        found = re.match(r"\s*\[(\w+)\.cpp:\d+\]\s*(.*(?:[Ff]ail|Attempted).*)", line)
        if found and found.group(1) not in _NOISE:
            return f" ({found.group(1)}: {found.group(2).strip()})"
    code = re.search(r"error:? 0x:?([0-9a-fA-F]+)", message)
    meaning = _CODES.get(int(code.group(1), 16)) if code else None
    return f" ({meaning})" if meaning else ""


def quiet_loggers() -> None:
    """torchao (imported with executorch) logs a warning for each of its CUDA kernel libraries a CPU build cannot
    load, and torch one about an Enum torchao registers: noise for every user, on every load."""
    import logging

    for name in ("torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)


def import_runtime() -> Any:
    """executorch.runtime, with the kernels of the quantize / dequantize ops that an int8 program runs outside
    XNNPACK registered (a 1-D convolution over an open batch and length stays outside: without them its load
    failed, "error: 0x14", operator missing)."""
    quiet_loggers()
    runtime = require("executorch.runtime", "executorch", "ExecuTorch")
    import executorch.kernels.quantized  # noqa: F401  # registers them (2 ms)

    return runtime


def _constant(program: Any, name: str) -> Any:
    (value,) = program.load_method(name).execute([])
    return value


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _ranges(path: Path, embedded: Any) -> dict[tuple[str, int], tuple[int, int]]:
    """The open dims' ranges inside the program; {} where it has none."""
    ranges = _json_constant(path, embedded, DIM_RANGES_METHOD, lambda d: {
        _dim_key(key): (int(lo), int(hi)) for key, (lo, hi) in d.items()})
    return ranges or {}


def _tied(path: Path, embedded: Any) -> list[list[tuple[str, int]]]:
    """The groups of open dims the program takes at one size; [] where it has none."""
    groups = _json_constant(path, embedded, TIED_DIMS_METHOD, lambda d: [[_dim_key(k) for k in g] for g in d])
    return groups or []


def _json_constant(path: Path, embedded: Any, method: str, parse: Any) -> Any:
    """`parse` of a constant method's JSON (a uint8 tensor), None where the program has none; a corrupt one is a
    LoadError naming the method."""
    if embedded is None:
        return None
    try:
        return parse(json.loads(_bytes(embedded).decode()))
    except (ValueError, TypeError, AttributeError, UnicodeDecodeError) as exc:
        raise LoadError(f"{path}: corrupt {method} inside the program ({exc})") from exc


def _dim_key(key: str) -> tuple[str, int]:
    """"input:axis" (as the edge writes it) -> (input, axis)."""
    name, _, axis = key.rpartition(":")
    return name, int(axis)


def _bytes(embedded: Any) -> bytes:
    """A constant method's uint8 tensor (the edge's JSON) as bytes."""
    return np.asarray(embedded.numpy() if hasattr(embedded, "numpy") else embedded, dtype=np.uint8).tobytes()


def _signature(path: Path, embedded: Any) -> Signature:
    """The Signature inside the program (JSON as a uint8 tensor), else the manifest's; neither is a LoadError."""
    raw = None
    if embedded is not None:
        try:
            raw = _bytes(embedded)
        except (ValueError, TypeError) as exc:
            raise LoadError(f"{path}: corrupt {SIGNATURE_METHOD} inside the program ({exc})") from exc
    return resolve_signature(path, raw, SIGNATURE_METHOD)
