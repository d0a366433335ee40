"""Which members of a torch archive (TorchScript .pt, torch.export .pt2, and zips nested in them) are
checked before torch opens the file, and how. Members are streamed, never read whole.

Where torch.export.load (torch 2.13, torch/export/pt2_archive/_package.py) unpickles, and so where every
member is scanned as a stream of pickles whatever its name or first byte (modelkit.safety.pickles):
- everything under data/weights/, data/constants/ and data/sample_inputs/, at any depth: the legacy
  weights / constants files `data/<dir>/<model>.pt` (read whenever present, torch.load(weights_only=False)
  after a failed weights_only=True), `use_pickle` payloads, custom and opaque objects, sample inputs;
- every path a payload config (`data/{weights,constants}/*_config.json`) names as unpickled, matched as
  a full path inside the archive, never by base name;
- *.pkl, *.pt, *.pth anywhere (TorchScript's data.pkl / constants.pkl, torch 2.7's serialized_*.pt).
Only members a payload config declares as raw tensors (use_pickle false; `tensor_` constants) are
skipped. Any other member that starts like a pickle is scanned too, and zips inside are scanned alike.

Code (lifted by trust_unsafe_code=True, modelkit.safety.torchscript): TorchScript source under code/,
torch.export programs under models/, and AOTInductor native libraries under data/aotinductor/ (which
torch.export.load dlopens), refused outright unless trusted.
"""
from __future__ import annotations

import json
import posixpath
import shutil
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import IO, Any

from ..errors import LoadError, UnsafeModelError
from .archive import check_zip_members
from .limits import size
from .pickles import check_pickle_stream

SCANNED_DIRS = ("data/weights/", "data/constants/", "data/sample_inputs/")
PICKLE_SUFFIXES = (".pkl", ".pt", ".pth")
NATIVE_DIRS = ("data/aotinductor/",)
MAX_NESTING = 3
MAX_TEXT_BYTES = 256 * 1024**2  # a JSON config or program, or a TorchScript source file
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError, NotImplementedError,
               UnicodeDecodeError, RuntimeError)  # RuntimeError: a member flagged as encrypted


def check_torch_archive(path: str | Path, trust_unsafe_code: bool = False) -> None:
    """Scan every member torch could unpickle, and (unless trusted) the code, of a torch zip archive.
    Raises UnsafeModelError (what would run), LoadError (unreadable), ResourceError (too large)."""
    p = Path(path)
    try:
        with zipfile.ZipFile(p) as zf:
            _check_zip(zf, str(p), 0, trust_unsafe_code)
    except _ZIP_ERRORS as exc:
        raise LoadError(f"{p}: damaged zip archive ({type(exc).__name__}: {exc})") from exc


def _rel(name: str) -> str:
    """A member's path inside the archive: torch writes every member under one top folder."""
    head, sep, rest = name.partition("/")
    return rest if sep else name


def _check_zip(zf: zipfile.ZipFile, where: str, depth: int, trust: bool) -> None:
    check_zip_members(zf, Path(where))
    names = [i.filename for i in zf.infolist() if not i.is_dir()]
    unpickled, raw = _payloads(zf, names, where)
    for n in names:
        rel = _rel(n)
        here = f"{where}!{n}"
        is_pickle_name = n.endswith(PICKLE_SUFFIXES)
        if rel.startswith(NATIVE_DIRS):
            if not trust:
                raise UnsafeModelError(f"{here}: refused to load: an AOTInductor package, native code that torch "
                                       "loads with dlopen. If it is your own, pass --trust-unsafe-code "
                                       "(trust_unsafe_code=True)")
            continue
        if rel in raw and rel not in unpickled and not is_pickle_name:
            continue  # a raw tensor: torch maps its bytes, never unpickles them
        if _is_config(rel) and rel not in unpickled:
            continue  # parsed above (JSON)
        if rel.startswith("code/") and rel.endswith(".py"):
            if not trust:
                from .torchscript import check_torchscript_source

                check_torchscript_source(_read_text(zf, n, here), here)
            continue
        if ((rel.startswith("models/") and rel.endswith(".json")) or rel == "serialized_exported_program.json") \
                and not trust:
            from .torchscript import check_export_program

            check_export_program(_read_json(zf, n, here), here)
            continue
        must = rel in unpickled or rel.startswith(SCANNED_DIRS) or is_pickle_name
        with zf.open(n) as fh:
            head = fh.peek(4)[:4]
            if head == b"PK\x03\x04":
                _check_nested(fh, here, depth, trust, must)
            elif must:
                check_pickle_stream(fh, here, strict=True)
            elif len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
                check_pickle_stream(fh, here, strict=False)  # starts like a pickle: torch never unpickles it,
                # but refuse one that names a forbidden global


def _check_nested(fh: IO[bytes], where: str, depth: int, trust: bool, must: bool) -> None:
    """A zip inside the archive (torch.save's format, a TorchScript archive torch.load would hand to
    torch.jit.load): spooled to a temporary file past 64 MiB, then scanned like the outer one."""
    if depth + 1 > MAX_NESTING:
        raise UnsafeModelError(f"{where}: archives nested more than {MAX_NESTING} deep")
    with tempfile.SpooledTemporaryFile(max_size=64 * 1024**2) as tmp:
        shutil.copyfileobj(fh, tmp, 1024**2)
        tmp.seek(0)
        try:
            with zipfile.ZipFile(tmp) as inner:
                _check_zip(inner, where, depth + 1, trust)
        except _ZIP_ERRORS as exc:
            if must:
                raise LoadError(f"{where}: a damaged zip archive that torch would load "
                                f"({type(exc).__name__}: {exc})") from exc


def _is_config(rel: str) -> bool:
    return rel.startswith(("data/weights/", "data/constants/")) and rel.endswith("_config.json")


def _payloads(zf: zipfile.ZipFile, names: list[str], where: str) -> tuple[set[str], set[str]]:
    """From the payload configs: (paths torch unpickles, paths it reads as raw tensor bytes)."""
    unpickled: set[str] = set()
    raw: set[str] = set()
    for n in names:
        rel = _rel(n)
        if not _is_config(rel):
            continue
        base = "data/constants/" if rel.startswith("data/constants/") else "data/weights/"
        cfg = _read_json(zf, n, f"{where}!{n}")
        entries = cfg.get("config") if isinstance(cfg, dict) else None
        for meta in entries.values() if isinstance(entries, dict) else []:
            path_name = meta.get("path_name") if isinstance(meta, dict) else None
            if not isinstance(path_name, str):
                continue  # torch.export.load fails on it: nothing is loaded
            target = _join(base, path_name, f"{where}!{n}")
            use_pickle = bool(meta.get("use_pickle"))
            if base == "data/constants/":
                if use_pickle or path_name.startswith(("custom_obj_", "opaque_obj_")):
                    unpickled.add(target)
                elif path_name.startswith("tensor_"):
                    raw.add(target)
            elif use_pickle:
                unpickled.add(target)
            else:
                raw.add(target)
    return unpickled, raw


def _join(base: str, path_name: str, where: str) -> str:
    if not path_name or path_name.startswith(("/", "\\")) or ".." in path_name.replace("\\", "/").split("/"):
        raise UnsafeModelError(f"{where}: refused to load: payload path {path_name!r} leaves {base}")
    return posixpath.normpath(base + path_name)


def _read_text(zf: zipfile.ZipFile, name: str, where: str) -> str:
    with zf.open(name) as fh:
        data = fh.read(MAX_TEXT_BYTES + 1)
    if len(data) > MAX_TEXT_BYTES:
        raise UnsafeModelError(f"{where}: larger than {size(MAX_TEXT_BYTES)}, more than modelkit reads to check it")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LoadError(f"{where}: not UTF-8 text ({exc})") from exc


def _read_json(zf: zipfile.ZipFile, name: str, where: str) -> Any:
    try:
        return json.loads(_read_text(zf, name, where))
    except (ValueError, RecursionError) as exc:
        raise LoadError(f"{where}: unreadable JSON ({type(exc).__name__}: {exc})") from exc
