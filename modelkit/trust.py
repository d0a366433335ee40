"""The local trust stores: the TVM libraries this machine compiled (and the TFLite files it checked).

A TVM library is a shared object; dlopen runs its constructors before any check inside it could, so a
library is code, not data. The sha256 in the manifest that travels with it proves only that the two
files travel together. Trust is therefore local: `modelkit compile` / `modelkit convert --to tvm` record
the sha256 of every library they write in a store under the user's cache folder, and modelkit.load
runs a library only when its content is recorded there (a copied or renamed library stays trusted, a
modified one does not), or when the caller passes trust_unsafe_code=True / --trust-unsafe-code.

The TVM store is `$MODELKIT_CACHE_DIR/trust/tvm/` (default `~/.cache/modelkit/trust/tvm/`), a folder of mode
0700 holding one entry per library, `<sha256>.json` (mode 0600: sha256, the path it was written to,
when, by which modelkit). An entry counts only if it and its folders are owned by this user and writable
by nobody else. No key or HMAC is needed: whoever can write this user's cache folder can already run
code as this user.
"""
from __future__ import annotations

import json
import os
import stat
import tempfile
import time
from pathlib import Path

from ._cache import cache_root


def store_dir(kind: str = "tvm") -> Path:
    """The store for one kind of file: `tvm` (libraries compiled here), `tflite` (flatbuffers known not to crash
    the interpreter, modelkit.safety.tflite)."""
    return cache_root() / "trust" / kind


def record(digest: str, path: str | os.PathLike, kind: str = "tvm", how: str = "compiled by modelkit") -> str:
    """Write the store entry for a sha256 (atomically, mode 0600, its folders 0700); returns the sha256."""
    folder = store_dir(kind)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    for d in (folder, folder.parent):
        if d.stat().st_uid == os.getuid():
            os.chmod(d, 0o700)
    entry = {"sha256": digest, "path": str(Path(path).resolve()), "how": how,
             "recorded": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    fd, tmp = tempfile.mkstemp(prefix=".entry-", dir=folder)  # mode 0600
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(entry, fh)
        os.replace(tmp, folder / f"{digest}.json")
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return digest


def is_recorded(digest: str, kind: str = "tvm") -> bool:
    """Whether the store holds this sha256, in an entry that only this user could have written."""
    if not digest or not all(c in "0123456789abcdef" for c in digest) or len(digest) != 64:
        return False
    folder = store_dir(kind)
    entry = folder / f"{digest}.json"
    try:
        if not all(_private(d) for d in (folder, folder.parent)) or not _private(entry, regular=True):
            return False
        with open(entry) as fh:
            return json.load(fh).get("sha256") == digest
    except (OSError, ValueError, AttributeError):
        return False


def record_library(path: str | os.PathLike, digest: str | None = None) -> str:
    """Record the library at path (its content's sha256) as compiled on this machine; returns the sha256."""
    from .manifest import sha256_of

    return record(digest or sha256_of(Path(path)), path, "tvm")


def is_trusted(digest: str) -> bool:
    """Whether a library with this sha256 was compiled on this machine (an entry in the store that only
    this user could have written)."""
    return is_recorded(digest, "tvm")


def describe() -> str:
    """Where the store is, for messages."""
    return str(store_dir())


def _private(p: Path, regular: bool = False) -> bool:
    st = p.lstat()
    kind_ok = stat.S_ISREG(st.st_mode) if regular else stat.S_ISDIR(st.st_mode)
    return kind_ok and st.st_uid == os.getuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
