"""The artifact manifest, `<artifact>.modelkit.json`, written beside every artifact modelkit makes."""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import _atomic
from .errors import LoadError
from .formats import Format, manifest_path
from .spec import Signature

SCHEMA_VERSION = 1


@dataclass
class Edge:
    """One conversion hop: which converter made the artifact, from what."""

    source: str
    target: str
    converter: str
    versions: dict[str, str] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    seconds: float | None = None


@dataclass
class Manifest:
    format: str
    signature: dict[str, Any]
    source: dict[str, Any] | None = None  # {"path", "sha256", "format"}
    chain: list[dict[str, Any]] = field(default_factory=list)
    opset: int | None = None
    ir_version: int | None = None
    target: str | None = None
    quantization: str | None = None
    parity: dict[str, Any] | None = None
    training: dict[str, Any] | None = None
    size_bytes: int | None = None
    sha256: str | None = None
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    extra: dict[str, Any] = field(default_factory=dict)
    schema: int = SCHEMA_VERSION

    @property
    def sig(self) -> Signature:
        return Signature.from_dict(self.signature)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False, default=str)


def sha256_of(path: str | os.PathLike) -> str:
    """sha256 of a file, or of a folder's files (sorted relative paths and contents)."""
    p = Path(path)
    h = hashlib.sha256()
    files = sorted(x for x in p.rglob("*") if x.is_file()) if p.is_dir() else [p]
    for f in files:
        if p.is_dir():
            h.update(str(f.relative_to(p)).encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def size_of(path: str | os.PathLike) -> int:
    p = Path(path)
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return p.stat().st_size


def write(artifact: str | os.PathLike, manifest: Manifest, content: str | os.PathLike | None = None) -> Path:
    """Fill size and sha256 from the artifact (or from `content`, the artifact still under its temporary
    name) and write the manifest beside `artifact` atomically."""
    artifact = Path(artifact)
    measured = Path(content) if content is not None else artifact
    manifest.size_bytes = size_of(measured)
    manifest.sha256 = sha256_of(measured)
    dest = manifest_path(artifact)
    _atomic.write_text(dest, manifest.to_json() + "\n")
    return dest


def read(artifact: str | os.PathLike) -> Manifest | None:
    """The manifest beside an artifact, or None if there is none. A corrupt one raises LoadError."""
    mp = manifest_path(artifact)
    if not mp.is_file():
        return None
    try:
        data = json.loads(mp.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or "format" not in data or "signature" not in data:
            raise ValueError("missing 'format' or 'signature'")
        Format.parse(data["format"])
        known = set(Manifest.__dataclass_fields__)
        return Manifest(**{k: v for k, v in data.items() if k in known})
    except (OSError, ValueError, TypeError) as exc:
        raise LoadError(f"{mp}: corrupt manifest ({exc})") from exc
