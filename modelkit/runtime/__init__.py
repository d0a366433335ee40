"""One API to run any artifact: `load(path)` picks the engine by the detected format.

Engines are imported only when a model of their format is loaded, so importing this package (and
loading an ONNX model) never imports TensorFlow, torch or JAX.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .._require import require
from ..errors import FormatError
from ..formats import Format, check_regular, detect
from .base import Model
from .id_ranges import id_ranges
from .size_limits import size_limits

# format -> (engine module, pip extra that installs it: the runtime-only one where there is one)
ENGINES: dict[Format, tuple[str, str]] = {
    Format.KERAS: ("modelkit.runtime.keras", "keras"),
    Format.SAVED_MODEL: ("modelkit.runtime.saved_model", "keras"),
    Format.ONNX: ("modelkit.runtime.onnxruntime", "run-onnx"),
    Format.TFLITE: ("modelkit.runtime.litert", "run-tflite"),
    Format.TORCHSCRIPT: ("modelkit.runtime.torchscript", "run-torch"),
    Format.TORCH_EXPORT: ("modelkit.runtime.torch_export", "run-torch"),
    Format.EXECUTORCH: ("modelkit.runtime.executorch", "executorch"),
    Format.TVM: ("modelkit.runtime.tvm", "run-tvm"),
    Format.OPENVINO: ("modelkit.runtime.openvino", "openvino"),
}

__all__ = ["load", "Model", "ENGINES"]


def load(path: str | os.PathLike, device: str = "cpu", threads: int | None = None,
         format: str | Format | None = None, **options: Any) -> Model:
    """Load an artifact of any supported format and return a Model.

    device: 'cpu' or 'cuda[:N]' (an engine without that device raises, never falls back silently).
    threads: intra-op threads for the engine (None: the engine's default).
    format: skip detection (still checked against the content by the engine).
    options: engine specific (e.g. trust_unsafe_code=True for .keras files with Lambda layers).
    """
    p = Path(path)
    check_regular(p)  # a FIFO or a device (/dev/zero) would block or never end: refused before any open
    fmt = Format.parse(format) if format is not None else detect(p)
    if fmt not in ENGINES:
        raise FormatError(f"no runtime engine for format '{fmt.value}' yet; "
                          f"loadable formats: {', '.join(f.value for f in ENGINES)}")
    module_name, extra = ENGINES[fmt]
    module = require(module_name, extra, f"the engine for {fmt.value}")
    model = module.load(p, device=device, threads=threads, **options)
    m = _recorded_manifest(p)
    model.id_ranges = {**model.id_ranges, **id_ranges(m, model.signature)}  # an engine may read its own too
    model.size_limits = size_limits(m, model.signature)
    return model


def _recorded_manifest(path: Path) -> Any:
    """The manifest beside `path` (None without one; a corrupt manifest is the engine's business, which reads it
    itself where it needs it)."""
    from .. import manifest as _manifest
    from ..errors import ManifestError

    try:
        return _manifest.read(path)
    except ManifestError:
        return None
