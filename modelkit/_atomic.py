"""Atomic outputs: build an artifact under a temporary name in the target folder, then rename.

A failed or interrupted write leaves no half-written artifact, and an existing artifact is never
replaced unless force=True. A folder that cannot be created (a parent that is a file, no permission, a
read-only file system) is an OutputPathError naming the path, before anything is written.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import ArtifactExistsError, ModelkitError, OutputPathError


def _reason(folder: Path, exc: OSError) -> str:
    """Why `folder` could not be created or written: a file on its path, or the OS's reason."""
    for p in (folder, *folder.parents):
        if p.exists():
            if not p.is_dir():
                return f"{p} is a file, not a folder"
            break
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied ({exc.filename or folder})"
    return f"{exc.strerror or exc} ({exc.filename or folder})"


def check_creatable(path: str | os.PathLike) -> None:
    """Raise OutputPathError if `path` (a file or folder to be written) cannot be created, without
    creating anything: its nearest existing ancestor must be a writable folder."""
    p = Path(os.path.abspath(path))
    for existing in (p, *p.parents):
        if not existing.exists():
            continue
        if existing != p and not existing.is_dir():
            raise OutputPathError(f"cannot write {path}: {existing} is a file, not a folder")
        folder = existing if existing.is_dir() else existing.parent
        if not os.access(folder, os.W_OK | os.X_OK):
            raise OutputPathError(f"cannot write {path}: {folder} is not writable")
        return


def make_dirs(folder: str | os.PathLike) -> Path:
    """mkdir -p, with an OutputPathError naming the folder instead of a bare OSError."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputPathError(f"cannot create folder {folder}: {_reason(folder, exc)}") from exc
    return folder


@contextlib.contextmanager
def _creating(dest: Path) -> Iterator[None]:
    """Turn an OSError from creating a temporary file or folder beside `dest` into an OutputPathError."""
    try:
        yield
    except OSError as exc:
        if isinstance(exc, ModelkitError):
            raise
        raise OutputPathError(f"cannot write {dest}: {_reason(dest.parent, exc)}") from exc


def check_writable(dest: Path, force: bool) -> None:
    """Raise ArtifactExistsError if dest exists and force is off."""
    if dest.exists() and not force:
        raise ArtifactExistsError(f"{dest} exists; pass --force (force=True) to overwrite it")


def remove_path(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    elif p.exists() or p.is_symlink():
        p.unlink()


def make_partial_dir(dest: Path) -> Path:
    """A private folder beside dest, named after dest and this process: `.NAME.PID.XXXX.partial`."""
    make_dirs(dest.parent)  # `modelkit compile --out new/dir/x.tvm.so`
    with _creating(dest):
        return Path(tempfile.mkdtemp(prefix=f".{dest.name}.{os.getpid()}.", suffix=".partial", dir=dest.parent))


def remove_stale_partials(dest: Path) -> None:
    """Delete partial folders for dest left by processes that were killed (their pid is gone)."""
    for p in dest.parent.glob(f".{glob_escape(dest.name)}.*.partial"):
        pid = p.name[len(dest.name) + 2:].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[]" else c for c in name)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `dest`; on success move it onto `dest`, on failure delete it.

    The yielded path does not exist yet; the caller creates a file or a folder there, keeping
    `dest`'s suffix so that tools which look at suffixes behave.
    """
    dest = Path(dest)
    check_writable(dest, force)
    make_dirs(dest.parent)
    remove_stale_partials(dest)
    tmpdir = make_partial_dir(dest)
    tmp = tmpdir / dest.name
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"the writer produced nothing at {tmp}")
        replace(tmp, dest, force)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def replace(src: Path, dest: Path, force: bool) -> None:
    """Move src onto dest atomically; an existing dest is replaced only with force."""
    check_writable(dest, force)
    if dest.exists() or dest.is_symlink():
        backup = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        os.replace(dest, backup)
        try:
            os.replace(src, dest)
        except OSError:
            os.replace(backup, dest)
            raise
        remove_path(backup)
    else:
        os.replace(src, dest)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(dest: str | os.PathLike, text: str) -> None:
    """Write a small text file atomically (always replaces: used for manifests and reports)."""
    dest = Path(dest)
    make_dirs(dest.parent)
    with _creating(dest):
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
