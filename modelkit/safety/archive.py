"""Archive checks and safe extraction: every member must stay inside the target folder and be a plain
file or folder (no links, devices or FIFOs, no absolute names, no '..'). Nothing lifts these checks.

Tar archives (.tar, .tar.gz, .mar saved as tar) are extracted with tarfile's filter="data" AND an
explicit member check first, so that nothing is written when any member is bad. Zip archives (.mar,
.keras, wheels) get the same member check, and the extracted size is bounded (zip bombs): by
MAX_ARCHIVE_BYTES always, by the memory this process can use for archives an engine reads into memory,
and by the free disk space for archives extracted to disk (modelkit.safety.limits). Sizes are the
declared ones, checked before anything is inflated; readers never inflate more than declared.
"""
from __future__ import annotations

import os
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from ..errors import LoadError, UnsafeModelError
from .limits import MAX_ARCHIVE_BYTES, check_fits_disk, check_fits_memory, size

MAX_EXTRACTED_BYTES = MAX_ARCHIVE_BYTES  # the name earlier releases used
MAX_MEMBERS = 100_000


def check_member_name(src: Path, name: str) -> PurePosixPath:
    """A member name that stays inside the target: relative, no '..', no drive, no NUL."""
    norm = name.replace("\\", "/")
    posix = PurePosixPath(norm)
    if not name or "\x00" in name:
        raise UnsafeModelError(f"{src}: archive member {name!r} has an empty or NUL name")
    if posix.is_absolute() or norm.startswith("/") or (len(norm) > 1 and norm[1] == ":") or norm.startswith("~"):
        raise UnsafeModelError(f"{src}: archive member '{name}' has an absolute path (would escape the target)")
    if ".." in posix.parts:
        raise UnsafeModelError(f"{src}: archive member '{name}' contains '..' (would escape the target)")
    return posix


def zip_member_is_link(info: zipfile.ZipInfo) -> bool:
    mode = (info.external_attr >> 16) & 0o170000
    return mode == stat.S_IFLNK


def check_zip_members(zf: zipfile.ZipFile, src: Path, in_memory: bool = True) -> int:
    """Check every member of an open zip; returns the total uncompressed size.

    in_memory: an engine will read the members into memory (.keras, torch archives), so their total must
    fit in what this process can use (ResourceError); False when they are extracted to disk instead."""
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise UnsafeModelError(f"{src}: {len(infos)} archive members (more than {MAX_MEMBERS})")
    total = 0
    for info in infos:
        check_member_name(src, info.filename)
        mode = (info.external_attr >> 16) & 0o170000
        if zip_member_is_link(info):
            raise UnsafeModelError(f"{src}: archive member '{info.filename}' is a symbolic link")
        if mode and mode not in (stat.S_IFREG, stat.S_IFDIR):
            raise UnsafeModelError(f"{src}: archive member '{info.filename}' is not a plain file or folder")
        total += info.file_size
    _check_total(src, total)
    if in_memory:
        check_fits_memory(total, f"{src}: inflating this archive")
    return total


def _check_total(src: Path, total: int) -> None:
    if total > MAX_ARCHIVE_BYTES:
        raise UnsafeModelError(f"{src}: archive would extract to {size(total)} (limit {size(MAX_ARCHIVE_BYTES)}, "
                               "MODELKIT_MAX_ARCHIVE_BYTES): refused as a decompression bomb")


def check_tar_members(tf: tarfile.TarFile, src: Path) -> int:
    """Check every member of an open tar; returns the total size."""
    total = 0
    for count, m in enumerate(tf.getmembers()):
        if count >= MAX_MEMBERS:
            raise UnsafeModelError(f"{src}: more than {MAX_MEMBERS} archive members")
        check_member_name(src, m.name)
        if m.issym() or m.islnk():
            raise UnsafeModelError(f"{src}: archive member '{m.name}' is a {'symbolic' if m.issym() else 'hard'} "
                                   f"link (to '{m.linkname}')")
        if not (m.isfile() or m.isdir()):
            raise UnsafeModelError(f"{src}: archive member '{m.name}' is not a plain file or folder")
        total += m.size
    _check_total(src, total)
    return total


def safe_extract(archive: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Extract a tar (any compression) or zip archive into dest after checking every member."""
    src, out = Path(archive), Path(dest)
    out.mkdir(parents=True, exist_ok=True)
    root = out.resolve()
    if zipfile.is_zipfile(src):
        try:
            with zipfile.ZipFile(src) as zf:
                total = check_zip_members(zf, src, in_memory=False)
                check_fits_disk(total, root, str(src))
                for info in zf.infolist():
                    target = (root / info.filename).resolve()
                    if not target.is_relative_to(root):
                        raise UnsafeModelError(f"{src}: archive member '{info.filename}' resolves outside {root}")
                    zf.extract(info, root)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError, UnicodeDecodeError,
                NotImplementedError, RuntimeError) as exc:  # RuntimeError: a member flagged as encrypted
            raise LoadError(f"{src}: damaged zip archive ({type(exc).__name__}: {exc})") from exc
        return out
    try:
        with tarfile.open(src, "r:*") as tf:
            check_fits_disk(check_tar_members(tf, src), root, str(src))
            try:
                tf.extractall(root, filter="data")
            except tarfile.FilterError as exc:
                raise UnsafeModelError(f"{src}: refused by the data filter: {exc}") from exc
    except (tarfile.ReadError, tarfile.CompressionError, EOFError, OSError) as exc:
        raise LoadError(f"{src}: not a readable tar or zip archive ({exc})") from exc
    return out
