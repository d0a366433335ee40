"""A static scan of the pickles inside torch archives (TorchScript .pt and torch.export .pt2), done
before torch opens the file. Nothing here unpickles anything: pickletools only reads the opcodes.

Why: torch.jit.load unpickles data.pkl with TorchScript's own restricted unpickler, but
torch.export.load (torch 2.13) calls torch.load(weights_only=False) for weights and constants the
archive marks `use_pickle`, pickle.loads for opaque constants, and falls back to weights_only=False
when the sample inputs do not load with weights_only=True. A .pt2 file can therefore run code on load.
Every pickle in the archive (and in archives nested in it) may name only the globals torch itself
writes: tensor rebuilders, storages, OrderedDict, TorchScript classes (`__torch__.*`, compiled from the
archive's own code, never imported) and a few plain builtins. Anything else (`os.system`,
`subprocess.Popen`, `builtins.eval`, `posix.system`, ...) is an UnsafeModelError, and nothing lifts it.
"""
from __future__ import annotations

import io
import json
import pickletools
import zipfile
import zlib
from pathlib import Path
from typing import Iterable

from .errors import LoadError, UnsafeModelError
from .safety_archive import check_zip_members

ALLOWED_EXACT = frozenset({
    ("collections", "OrderedDict"), ("torch", "Size"), ("torch", "device"), ("torch", "dtype"),
    ("torch._tensor", "_rebuild_from_type_v2"), ("torch.nn.parameter", "Parameter"),
    ("torch", "Tensor"), ("torch.storage", "UntypedStorage"), ("torch.storage", "TypedStorage"),
    ("torch", "UntypedStorage"),
    *{("builtins", n) for n in ("set", "frozenset", "slice", "complex", "tuple", "list", "dict", "int", "float",
                                "bool", "str", "bytes", "bytearray")},
})
_TORCH_DTYPES = frozenset({"float16", "float32", "float64", "bfloat16", "int8", "int16", "int32", "int64",
                           "uint8", "bool", "complex64", "complex128", "half", "float", "double", "long", "int",
                           "short"})
_STRING_OPS = frozenset({"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING",
                         "SHORT_BINSTRING"})
MAX_NESTING = 3


def allowed_global(module: str, name: str) -> bool:
    if module == "__torch__" or module.startswith("__torch__."):
        return True  # TorchScript classes: compiled from the archive's code/ by TorchScript, not imported
    if (module, name) in ALLOWED_EXACT:
        return True
    if module == "torch" and (name.endswith("Storage") or name in _TORCH_DTYPES):
        return True
    if module == "torch._utils" and name.startswith("_rebuild_"):
        return True
    return module == "torch.jit._pickle"  # TorchScript's list / tag builders


def pickle_globals(data: bytes, where: str) -> list[tuple[str, str]]:
    """The (module, name) pairs a pickle would import, read from its opcodes; unparsable is a LoadError."""
    found: list[tuple[str, str]] = []
    strings: list[object] = []  # values pushed lately (strings, else None), for STACK_GLOBAL
    memo: dict[int, object] = {}
    try:
        for op, arg, _ in pickletools.genops(io.BytesIO(data)):
            name = op.name
            if name in ("GLOBAL", "INST"):
                module, _, attr = str(arg).partition(" ")
                found.append((module, attr))
                strings.append(None)
            elif name == "STACK_GLOBAL":
                if len(strings) < 2 or not all(isinstance(s, str) for s in strings[-2:]):
                    raise UnsafeModelError(f"{where}: a pickle imports a global built at run time "
                                           "(STACK_GLOBAL of computed names)")
                found.append((str(strings[-2]), str(strings[-1])))
                strings.append(None)
            elif name in _STRING_OPS:
                strings.append(arg if isinstance(arg, str) else arg.decode("latin-1") if isinstance(arg, bytes)
                               else None)
            elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
                memo[int(arg)] = strings[-1] if strings else None
            elif name == "MEMOIZE":
                memo[len(memo)] = strings[-1] if strings else None
            elif name in ("BINGET", "LONG_BINGET", "GET"):
                strings.append(memo.get(int(arg)))
            elif name not in ("PROTO", "FRAME"):
                strings.append(None)
            if len(strings) > 64:
                del strings[:-8]
    except (ValueError, EOFError, KeyError, IndexError, TypeError) as exc:  # pickletools' parse errors
        raise LoadError(f"{where}: not a readable pickle ({type(exc).__name__}: {exc})") from exc
    return found


def check_pickle(data: bytes, where: str) -> None:
    for module, name in pickle_globals(data, where):
        if not allowed_global(module, name):
            raise UnsafeModelError(f"{where}: refused to load: a pickle inside would import and call "
                                   f"'{module}.{name}' (only torch's tensor and storage rebuilders are allowed)")


def _looks_like_pickle(data: bytes) -> bool:
    return len(data) >= 2 and data[0] == 0x80 and 2 <= data[1] <= 5


def _pickled_payloads(zf: zipfile.ZipFile, names: Iterable[str]) -> set[str]:
    """Members a .pt2 archive marks as pickled (use_pickle weights/constants, custom and opaque objects)."""
    out: set[str] = set()
    for n in names:
        if not n.endswith("_config.json") or "/data/" not in n:
            continue
        try:
            cfg = json.loads(zf.read(n))
        except (ValueError, UnicodeDecodeError) as exc:
            raise LoadError(f"{n}: unreadable payload config ({exc})") from exc
        entries = cfg.get("config", {}) if isinstance(cfg, dict) else {}
        for meta in (entries.values() if isinstance(entries, dict) else []):
            if not isinstance(meta, dict):
                continue
            path = str(meta.get("path_name", ""))
            if meta.get("use_pickle") or path.startswith(("custom_obj", "opaque_obj")):
                out.add(path)
    return out


def check_torch_archive(path: str | Path, _data: bytes | None = None, _depth: int = 0) -> None:
    """Scan every pickle in a torch zip archive (and zips nested in it). Raises UnsafeModelError."""
    p = Path(path)
    if _depth > MAX_NESTING:
        raise UnsafeModelError(f"{p}: archives nested more than {MAX_NESTING} deep")
    try:
        with zipfile.ZipFile(io.BytesIO(_data) if _data is not None else p) as zf:
            check_zip_members(zf, p)
            names = zf.namelist()
            pickled = _pickled_payloads(zf, names)
            for n in names:
                if n.endswith("/"):
                    continue
                data = zf.read(n)
                where = f"{p}!{n}"
                base = n.rsplit("/", 1)[-1]
                if data[:4] == b"PK\x03\x04":
                    check_torch_archive(where, data, _depth + 1)
                elif n.endswith(".pkl") or base in pickled or "/sample_inputs/" in n:
                    check_pickle(data, where)
                elif _looks_like_pickle(data):
                    try:
                        check_pickle(data, where)
                    except LoadError:
                        pass  # raw tensor bytes that happen to start like a pickle: torch never unpickles them
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError, NotImplementedError,
            UnicodeDecodeError, RuntimeError) as exc:  # RuntimeError: a member flagged as encrypted
        raise LoadError(f"{p}: damaged zip archive ({type(exc).__name__}: {exc})") from exc
