"""Input files for `modelkit run` / `modelkit verify --data`: .npy and .npz, read without trusting them.

Every array header is read first (numpy.lib.format) and checked before anything is allocated: no
pickled objects, at most MODELKIT_MAX_INPUT_BYTES (modelkit.runtime.base.MAX_INPUT_BYTES) per file, and
exactly as many data bytes as the header claims. A 300-byte file claiming a (2**34, 64) array is an
InputError, not a 4 TiB allocation. numpy is imported inside the functions: `modelkit --help` stays fast.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import IO, Any

from .errors import InputError

NPY_MAGIC = b"\x93NUMPY"

ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a zip with members, an empty zip


def read_inputs(path: str | os.PathLike) -> Any:
    """A .npy file (one array) or a .npz file (a dict of arrays keyed by input name); the kind is
    decided by the content, not the suffix. Anything else, or a header that lies, is an InputError."""
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            head = fh.read(len(NPY_MAGIC))
            fh.seek(0)
            if head == NPY_MAGIC:
                return _read_npy(fh, os.fstat(fh.fileno()).st_size, str(p))
            if head[:4] in ZIP_MAGICS:
                return _read_npz(fh, str(p))
    except OSError as exc:
        raise InputError(f"{p}: cannot read it ({exc.strerror or exc})") from exc
    raise InputError(f"{p}: not a .npy or .npz file (no numpy or zip header)")


def _read_npy(fh: IO[bytes], size: int, label: str) -> Any:
    """The array of one .npy stream of `size` bytes at offset 0, checked before it is read."""
    from numpy.lib import format as npformat

    _check_header(fh, size, label)
    fh.seek(0)
    try:
        return npformat.read_array(fh, allow_pickle=False)
    except _read_errors() as exc:
        raise InputError(f"{label}: unreadable .npy data ({exc})") from exc


def _read_npz(fh: IO[bytes], label: str) -> dict[str, Any]:
    """Every member of a .npz, each checked from its header and its uncompressed size in the zip
    directory, before any member is read."""
    import zipfile

    from numpy.lib import format as npformat

    from .runtime.base import MAX_INPUT_BYTES

    try:
        zf = zipfile.ZipFile(fh)
    except _read_errors() as exc:
        raise InputError(f"{label}: not a valid .npz file ({exc})") from exc
    with zf:
        members = [i for i in zf.infolist() if not i.is_dir()]
        total = 0
        for info in members:
            if not info.filename.endswith(".npy"):
                raise InputError(f"{label}: member '{info.filename}' is not a .npy array")
            with _open_member(zf, info, label) as member:
                total += _check_header(member, info.file_size, f"{label}: member '{info.filename}'")
        if total > MAX_INPUT_BYTES:
            raise InputError(f"{label}: its arrays need {total} bytes together, more than the limit of "
                             f"{MAX_INPUT_BYTES} (MODELKIT_MAX_INPUT_BYTES)")
        arrays = {}
        for info in members:
            with _open_member(zf, info, label) as member:
                try:
                    arrays[info.filename[:-4]] = npformat.read_array(member, allow_pickle=False)
                except _read_errors() as exc:
                    raise InputError(f"{label}: member '{info.filename}' is unreadable ({exc})") from exc
    return arrays


def _read_errors() -> tuple[type[Exception], ...]:
    """What reading a corrupt .npy or zip raises (evaluated only when something was raised):
    zipfile.BadZipFile and bz2 errors are ValueError / OSError, zlib.error and lzma.LZMAError plain
    Exceptions, an encrypted member a RuntimeError, an unknown compression a NotImplementedError."""
    import lzma
    import zlib

    return (ValueError, EOFError, OSError, RuntimeError, zlib.error, lzma.LZMAError)


def _open_member(zf: Any, info: Any, label: str) -> IO[bytes]:
    try:
        return zf.open(info)
    except _read_errors() as exc:
        raise InputError(f"{label}: member '{info.filename}' is unreadable ({exc})") from exc


def _check_header(fh: IO[bytes], size: int, label: str) -> int:
    """Read a .npy header from fh (at offset 0) and return the data size it claims, in bytes; refuse
    object dtypes, sizes over MAX_INPUT_BYTES and a stream whose length does not match the header."""
    from numpy.lib import format as npformat

    from .runtime.base import MAX_INPUT_BYTES

    try:
        version = npformat.read_magic(fh)
        read_header = {(1, 0): npformat.read_array_header_1_0, (2, 0): npformat.read_array_header_2_0}.get(version)
        if read_header is None:
            raise InputError(f"{label}: .npy format version {version[0]}.{version[1]} is not supported")
        shape, _fortran, dtype = read_header(fh)
        header_bytes = fh.tell()
    except InputError:
        raise
    except _read_errors() as exc:
        raise InputError(f"{label}: not a valid .npy array ({exc})") from exc
    if dtype.hasobject:
        raise InputError(f"{label}: holds Python objects (unpickling them could run code); only arrays "
                         "without pickles are read")
    nbytes = math.prod(shape) * dtype.itemsize  # exact Python ints: no overflow
    if nbytes > MAX_INPUT_BYTES:
        raise InputError(f"{label}: its header claims shape {tuple(shape)} of {dtype.name}, {nbytes} bytes, "
                         f"more than the limit of {MAX_INPUT_BYTES} (MODELKIT_MAX_INPUT_BYTES)")
    if size - header_bytes != nbytes:
        raise InputError(f"{label}: its header claims shape {tuple(shape)} of {dtype.name} ({nbytes} bytes) "
                         f"but it holds {size - header_bytes} bytes of data (truncated or corrupt)")
    return nbytes
