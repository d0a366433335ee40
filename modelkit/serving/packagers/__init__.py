"""Package an artifact for an external server: TF Serving, TorchServe, Triton, KServe.

Every packager builds its whole output folder under a temporary name beside OUT and renames it into
place (atomic outputs); an existing OUT is replaced only with force=True.
"""
from __future__ import annotations

import importlib
import os
import re
from pathlib import Path
from typing import Any

from ... import _atomic
from ... import manifest as _manifest
from ...errors import ModelkitError
from ...formats import Format, detect, strip_suffix
from ...spec import Signature
from ..errors import PackagingError

TARGETS = {"tf-serving": "tf_serving", "torchserve": "torchserve", "triton": "triton", "kserve": "kserve"}
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,62}$")


def signature_of(artifact: Path, fmt: Format) -> Signature:
    """The artifact's signature: from its manifest, or from the runtime engine that loads it."""
    m = _manifest.read(artifact)
    if m is not None:
        return m.sig
    try:
        from ...runtime import load

        return load(artifact).signature
    except ModelkitError as exc:
        raise PackagingError(f"{artifact}: no manifest ({_manifest.manifest_path(artifact).name}) and the "
                             f"runtime cannot load {fmt.value} to read its signature: {exc}") from exc


def ir_elsewhere(fmt: Format) -> str:
    """The start of a refusal's hint for an OpenVINO IR, which only Triton and KServe take (else '')."""
    return "package it --for triton or --for kserve, or " if fmt == Format.OPENVINO else ""


def default_name(artifact: Path) -> str:
    stem = strip_suffix(artifact.name).split(".")[0]
    name = re.sub(r"[^A-Za-z0-9_-]", "_", stem) or "model"
    return name if name[0].isalpha() else f"m_{name}"


def package(artifact: str | os.PathLike, target: str, out: str | os.PathLike, name: str | None = None,
            version: int = 1, force: bool = False, **options: Any) -> Path:
    """Build the package for `target` ('tf-serving', 'torchserve', 'triton', 'kserve') at `out`."""
    if target not in TARGETS:
        raise PackagingError(f"unknown package target '{target}'; valid: {', '.join(TARGETS)}")
    artifact = Path(artifact)
    fmt = detect(artifact)
    name = name or default_name(artifact)
    if not _NAME.match(name):
        raise PackagingError(f"bad model name '{name}': letters, digits, '_' and '-', starting with a letter")
    if int(version) < 1:
        raise PackagingError(f"version must be a positive integer, got {version}")
    module = importlib.import_module(f"{__name__}.{TARGETS[target]}")
    dest = Path(out).resolve()
    with _atomic.atomic_path(dest, force=force) as tmp:
        tmp.mkdir()
        module.build(artifact, fmt, tmp, dest=dest, name=name, version=int(version), **options)
    return dest
