"""The runtime Model every engine returns: a Signature and predict(inputs) -> dict of numpy arrays.

Inputs are validated against the Signature here, once, before any native engine sees them: a
mis-shaped tensor can crash TFLite or abort TensorFlow, so validation is not optional. Running out of
memory in any engine is a ResourceError, mapped here for predict and by memory.guard_load for loads.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..errors import LoadError, ShapeError
from ..formats import Format
from ..spec import Signature
from .id_ranges import IdRanges, check_ids
from .memory import predict_error
from .size_limits import SizeLimits, check_sizes

MAX_INPUT_BYTES = int(os.environ.get("MODELKIT_MAX_INPUT_BYTES", str(4 * 1024**3)))


class Model:
    """Base of every engine's model. Subclasses set signature and implement _run."""

    format: Format
    engine: str = "?"
    id_ranges: IdRanges = {}  # set by modelkit.load from the manifest, by the Keras engine from its layers
    size_limits: SizeLimits = {}  # set by modelkit.load from the manifest (a table of positions: the longest input)

    def __init__(self, path: Path, signature: Signature):
        self.path = Path(path)
        self.signature = signature

    def predict(self, inputs: Mapping[str, Any] | np.ndarray) -> dict[str, np.ndarray]:
        """Run the model on inputs bound by name (a bare array for single-input models).

        Running out of memory, however the engine says it, raises ResourceError (modelkit.runtime.memory)."""
        try:
            bound = self.signature.bind_fast(inputs)  # exactly right already: no copy, nothing left to check
            if bound is None:
                bound = self.signature.bind(precheck(inputs))
            if self.id_ranges:
                check_ids(self.id_ranges, bound)
            if self.size_limits:
                check_sizes(self.size_limits, bound)
            return self._run(bound)
        except Exception as exc:  # no cost unless raised; only memory failures are changed
            err = predict_error(self.path, self.engine, self.signature, inputs, exc)
            if err is None:
                raise
            raise err from exc

    __call__ = predict

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.format.value} {self.path.name} via {self.engine}>"


def parse_device(device: str, supported: tuple[str, ...] = ("cpu",)) -> tuple[str, int]:
    """'cpu', 'cuda' or 'cuda:N' -> (kind, index); a kind the engine lacks raises a typed error."""
    m = re.fullmatch(r"(cpu|cuda)(?::(\d+))?", str(device).strip().lower())
    if not m:
        raise LoadError(f"unknown device '{device}'; valid devices: cpu, cuda, cuda:N")
    kind, idx = m.group(1), int(m.group(2) or 0)
    if kind not in supported:
        raise LoadError(f"device '{device}' is not supported by this engine; supported: {', '.join(supported)}")
    return kind, idx


def order_outputs(names: list[str], preferred: list[str] | None) -> list[str]:
    """Order output names as the manifest's signature does, when it names the same set."""
    if preferred and sorted(preferred) == sorted(names):
        return list(preferred)
    return names


def precheck(inputs: Any) -> Any:
    """Before Signature.bind copies anything: refuse arrays too large to materialise (a broadcast view of
    2**40 elements costs nothing until bind makes it contiguous), and give big-endian arrays native byte
    order (their dtype name is still 'float32', but an engine would read the bytes as little-endian).
    The mapping is copied only when an array had to change."""
    if type(inputs) is dict:  # fast path: native-order arrays under the limit pass untouched
        for v in inputs.values():
            if not (type(v) is np.ndarray and v.dtype.isnative and v.nbytes <= MAX_INPUT_BYTES):
                break
        else:
            return inputs
    if isinstance(inputs, np.ndarray):
        return _precheck_array("input", inputs)
    if isinstance(inputs, Mapping):
        changed = None
        for k, v in inputs.items():
            if isinstance(v, np.ndarray):
                fixed = _precheck_array(str(k), v)
                if fixed is not v:
                    changed = changed or {}
                    changed[k] = fixed
        return {**inputs, **changed} if changed else inputs
    return inputs


def _precheck_array(name: str, arr: np.ndarray) -> np.ndarray:
    # arr.size is an exact Python int (numpy refuses shapes whose product overflows intp)
    nbytes = arr.size * arr.dtype.itemsize
    if nbytes > MAX_INPUT_BYTES:
        raise ShapeError(f"input '{name}': shape {tuple(arr.shape)} of {arr.dtype.name} needs {nbytes} bytes, "
                         f"more than the limit of {MAX_INPUT_BYTES} (MODELKIT_MAX_INPUT_BYTES)")
    dt = arr.dtype
    if dt.isnative or dt.kind == "O" or dt.byteorder in ("=", "|"):
        return arr
    return arr.astype(dt.newbyteorder("="))
