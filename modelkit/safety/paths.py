"""Path checks for model files, done before any engine opens them. Nothing lifts these checks."""
from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from ..errors import UnsafeModelError


def check_onnx_external_data(path: str | os.PathLike) -> None:
    """Every external-data location of an ONNX model must be a relative path that stays inside the
    model's folder, with no '..', no symlink and no hard link on the way."""
    from .onnx_external import external_locations  # the wire format: no `onnx` package needed

    p = Path(path)
    root = p.resolve().parent
    for name, locations in external_locations(p):
        for location in locations or [""]:  # every 'location' entry, not only the one a reader keeps
            check_relative_member(root, location, what=f"external data of tensor '{name}'")


def check_relative_member(root: Path, location: str, what: str) -> Path:
    """Resolve `location` under `root`, refusing absolute paths, '..', symlinks and hard links."""
    if not location:
        raise UnsafeModelError(f"{what}: empty location")
    posix = PurePosixPath(location.replace("\\", "/"))
    if posix.is_absolute() or Path(location).is_absolute() or location.startswith("~"):
        raise UnsafeModelError(f"{what}: absolute location '{location}' refused (must be inside {root})")
    if ".." in posix.parts:
        raise UnsafeModelError(f"{what}: location '{location}' contains '..' (must stay inside {root})")
    current = root
    for part in posix.parts:
        current = current / part
        if current.is_symlink():
            raise UnsafeModelError(f"{what}: location '{location}' goes through a symlink ({current})")
    if current.is_file() and current.stat().st_nlink > 1:
        raise UnsafeModelError(f"{what}: location '{location}' is a hard link to another file")
    if not current.resolve().is_relative_to(root):
        raise UnsafeModelError(f"{what}: location '{location}' resolves outside {root}")
    return current
