"""`build_bundle`: a self-contained static folder that runs a model in any modern browser.

Layout: model.onnx, signature.json, modelkit.js (ES module: load / predict by input name),
index.html (demo page; draw-a-digit for digits models), ort/ (onnxruntime-web's WebAssembly build,
copied from the npm package at build time) and bundle.json (the bundle's manifest).
"""
from __future__ import annotations

import json
import shutil
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

from .. import _atomic
from .. import manifest as _manifest
from ..errors import UnsupportedConversionError
from ..formats import Format, detect
from .npm import ORT_WEB_FILES, ORT_WEB_VERSION, ort_web_dist

BUNDLE_MANIFEST = "bundle.json"


def build_bundle(model: str | Path, out: str | Path, force: bool = False, quantize: str | None = None,
                 trust_unsafe_code: bool = False) -> dict[str, Any]:
    """Build the bundle for a .keras or .onnx model into `out` (atomically); return its manifest.

    A .keras source is converted (and verified) to ONNX first; `quantize` ('dynamic-int8', 'int8')
    asks for a quantized ONNX model, with its accuracy drop recorded by the conversion.
    """
    from ..converters import convert
    from ..runtime import load

    src, out = Path(model), Path(out)
    _atomic.check_writable(out, force)
    fmt = detect(src)
    if fmt not in (Format.KERAS, Format.ONNX):
        raise UnsupportedConversionError(f"browser bundles are built from .keras or .onnx models, not {fmt.value}")
    if fmt == Format.ONNX and quantize:
        raise UnsupportedConversionError("quantize a browser bundle from the .keras source, so the accuracy "
                                         "drop can be measured against it")
    dist = ort_web_dist()
    with tempfile.TemporaryDirectory(prefix="modelkit-web-") as td:
        onnx_path = src
        if fmt == Format.KERAS:
            options = {"quantize": quantize} if quantize else None
            (result,) = convert(src, "onnx", out_dir=td, options=options, trust_unsafe_code=trust_unsafe_code)
            onnx_path = Path(result.path)
        onnx_manifest = _manifest.read(onnx_path)
        signature = load(onnx_path).signature
        with _atomic.atomic_path(out, force=force) as tmp:
            tmp.mkdir()
            shutil.copyfile(onnx_path, tmp / "model.onnx")
            (tmp / "ort").mkdir()
            for name in ORT_WEB_FILES:
                shutil.copyfile(dist / name, tmp / "ort" / name)
            static = resources.files("modelkit.web") / "static"
            for name in ("modelkit.js", "index.html"):
                (tmp / name).write_text((static / name).read_text(encoding="utf-8"), encoding="utf-8")
            (tmp / "signature.json").write_text(json.dumps(signature.to_dict(), indent=1), encoding="utf-8")
            info = {
                "format": "browser-bundle", "signature": signature.to_dict(),
                "source": {"path": str(src), "format": fmt.value, "sha256": _manifest.sha256_of(src)},
                "model": {"sha256": _manifest.sha256_of(onnx_path), "size_bytes": onnx_path.stat().st_size,
                          "quantization": (onnx_manifest.quantization if onnx_manifest else None) or quantize},
                "onnx_parity": onnx_manifest.parity if onnx_manifest else None,
                "onnx_accuracy": (onnx_manifest.extra or {}).get("accuracy") if onnx_manifest else None,
                "runtime": {"onnxruntime-web": ORT_WEB_VERSION, "files": list(ORT_WEB_FILES)},
                "browser_parity": None,
            }
            info["size_bytes"] = _manifest.size_of(tmp) + len(json.dumps(info))
            (tmp / BUNDLE_MANIFEST).write_text(json.dumps(info, indent=1), encoding="utf-8")
    return info


def read_bundle(folder: str | Path) -> dict[str, Any]:
    return json.loads((Path(folder) / BUNDLE_MANIFEST).read_text(encoding="utf-8"))


def record_browser_parity(folder: str | Path, parity: dict[str, Any]) -> None:
    info = read_bundle(folder)
    info["browser_parity"] = parity
    _atomic.write_text(Path(folder) / BUNDLE_MANIFEST, json.dumps(info, indent=1))
