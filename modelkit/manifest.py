"""The artifact manifest, `<artifact>.modelkit.json`, written beside every artifact modelkit makes.

A manifest is read only after it validates against the JSON schema shipped beside this module
(manifest.schema.json, checked with jsonschema) and its dtypes are real numpy dtypes; anything else is a
ManifestError naming the field (`signature.inputs[0].dtype`) and the problem.
"""
from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import json
import os
import reprlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import _atomic
from .errors import ManifestError
from .formats import Format, manifest_path
from .spec import Signature

SCHEMA_VERSION = 1
SCHEMA_FILE = Path(__file__).with_name("manifest.schema.json")
MAX_MANIFEST_BYTES = 64 * 1024**2  # a manifest is a few KB; a search's results table a few hundred


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
    """The manifest beside an artifact, or None if there is none. One that is not JSON, or does not
    match the schema, raises ManifestError naming the file, the field and the problem."""
    mp = manifest_path(artifact)
    if not mp.is_file():
        return None
    try:
        size = mp.stat().st_size
        raw = mp.read_bytes() if size <= MAX_MANIFEST_BYTES else None
    except OSError as exc:
        raise ManifestError(f"{mp}: unreadable manifest ({exc.strerror or exc})") from exc
    if raw is None:
        raise ManifestError(f"{mp}: corrupt manifest ({size} bytes, more than the {MAX_MANIFEST_BYTES} a "
                            "manifest may have)")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ManifestError(f"{mp}: corrupt manifest (not JSON: {exc})") from exc
    validate(data, str(mp))
    known = set(Manifest.__dataclass_fields__)
    return Manifest(**{k: v for k, v in data.items() if k in known})


def validate(data: Any, where: str = "manifest") -> None:
    """Raise ManifestError unless `data` (a parsed manifest) matches manifest.schema.json, names a known
    format and has numpy dtypes. The message names the first bad field as a path, e.g.
    `signature.inputs[0].dtype`."""
    try:
        error = _first_error(data)
    except RecursionError:
        raise ManifestError(f"{where}: invalid manifest: nested too deeply") from None
    if error is not None:
        raise ManifestError(f"{where}: invalid manifest: {error}")
    try:
        Format.parse(data["format"])
    except ValueError as exc:
        raise ManifestError(f"{where}: invalid manifest: format: {exc}") from exc


def _first_error(data: Any) -> str | None:
    """'path: problem' for the most relevant schema violation, or None."""
    from jsonschema.exceptions import best_match

    error = best_match(_validator().iter_errors(data))
    if error is None:
        return None
    path = list(error.absolute_path)
    if error.validator == "required":  # name the missing field itself
        missing = [k for k in error.validator_value if k not in error.instance]
        return f"{_json_path([*path, missing[0]])}: missing" if missing else error.message
    return f"{_json_path(path) or 'top level'}: {_problem(error)}"


def _json_path(parts: list[str | int]) -> str:
    """['signature', 'inputs', 0, 'dtype'] -> 'signature.inputs[0].dtype'."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


_ARTICLE = {"object": "an object", "array": "an array", "string": "a string", "integer": "an integer",
            "number": "a number", "boolean": "a boolean", "null": "null"}
_JSON_TYPE = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer", float: "number",
              type(None): "null"}


def _problem(error: Any) -> str:
    """The problem in words: the value is shown when it is a scalar, cut to 60 characters."""
    short = reprlib.Repr()
    short.maxstring = short.maxother = 60
    value = short.repr(error.instance)
    if error.validator == "type":
        want = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
        got = _ARTICLE.get(_JSON_TYPE.get(type(error.instance), ""), "a value")
        shown = "" if isinstance(error.instance, (dict, list)) else f" {value}"
        return f"expected {' or '.join(_ARTICLE.get(w, w) for w in want)}, got {got}{shown}"
    if error.validator == "format" and error.validator_value == "numpy-dtype":
        return f"{value} is not a numpy dtype"
    if error.validator == "pattern" and "{64}" in str(error.validator_value):
        return f"{value} is not a sha256 (64 lowercase hex digits)"
    return error.message if len(error.message) <= 200 else error.message[:200] + "…"


@functools.cache
def _validator() -> Any:
    """The schema's validator with the numpy-dtype format checked (jsonschema imported only here)."""
    import jsonschema
    import numpy as np

    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    checker = jsonschema.FormatChecker(formats=())

    @checker.checks("numpy-dtype", raises=(TypeError, ValueError))
    def _is_dtype(name: object) -> bool:
        return not isinstance(name, str) or np.dtype(name) is not None

    return cls(schema, format_checker=checker)
