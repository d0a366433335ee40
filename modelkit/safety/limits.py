"""How much memory and disk a model file may ask for before modelkit refuses it, decided from what the
file declares (zip member sizes, layer shapes) before anything is read, allocated or built.

- `MAX_ARCHIVE_BYTES` (default 16 GiB, env `MODELKIT_MAX_ARCHIVE_BYTES`): no archive may declare more
  uncompressed bytes than this, whatever the machine has (a decompression bomb): UnsafeModelError.
- An archive an engine reads into memory (.keras, TorchScript, .pt2) may declare at most
  `MEMORY_FRACTION` (one half) of the memory this process can still use: the engine holds the inflated
  member and the tensors built from it at the same time (Keras uses the same one-half bound). Beyond it,
  ResourceError before anything is inflated.
- An archive modelkit extracts to disk (.mar, wheels, .tar.gz) must fit the free space of the target.
- A pickle inside a torch archive is scanned as a stream, reading at most `MAX_PICKLE_BYTES` of it.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..errors import ResourceError

GIB = 1024**3
MAX_ARCHIVE_BYTES = int(os.environ.get("MODELKIT_MAX_ARCHIVE_BYTES", str(16 * GIB)))
MEMORY_FRACTION = 0.5
MAX_PICKLE_BYTES = 256 * 1024**2


def available_memory() -> int | None:
    """Bytes this process can still allocate: the least of the machine's MemAvailable, the room left
    under RLIMIT_AS, and the room left in its cgroup (a container's limit). None when nothing is known."""
    bounds = [_meminfo("MemAvailable:")]
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        if soft != resource.RLIM_INFINITY:
            used = _status_kib("VmSize:")
            bounds.append(max(0, soft - (used or 0)))
    except (ImportError, OSError, ValueError):
        pass
    bounds.append(_cgroup_room())
    known = [b for b in bounds if b is not None]
    return min(known) if known else None


def check_fits_memory(need: int, what: str, fraction: float = MEMORY_FRACTION) -> None:
    """ResourceError when `need` bytes exceed `fraction` of the memory this process can still use."""
    room = available_memory()
    if room is None or need <= room * fraction:
        return
    share = "" if fraction == 1 else f" ({fraction:.0%} of it may be used, the engine needs room for copies)"
    raise ResourceError(f"{what} needs {size(need)} in memory; this process can use {size(room)} now{share}. "
                        "Refused before anything was read or allocated: free memory, give the process more, or "
                        "check the file (a small file that asks for this much is likely hostile)")


def check_fits_disk(need: int, folder: Path, what: str) -> None:
    """ResourceError when `need` bytes do not fit in the free space of folder's file system."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if need > free:
        raise ResourceError(f"{what} would extract {size(need)} into {folder}, which has {size(free)} free; "
                            "refused before anything was written")


def size(nbytes: int | None) -> str:
    if nbytes is None:
        return "?"
    value = float(nbytes)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if value < 1024 or unit == "PiB":
            break
        value /= 1024
    return f"{nbytes} bytes" if unit == "bytes" else f"{value:.1f} {unit} ({nbytes} bytes)"


def _meminfo(key: str) -> int | None:
    return proc_kib("/proc/meminfo", key)


def _status_kib(key: str) -> int | None:
    return proc_kib("/proc/self/status", key)


def proc_kib(path: str, key: str) -> int | None:
    """A `KEY:  N kB` line of a /proc file, in bytes; None when absent or unreadable."""
    try:
        with open(path) as fh:
            for line in fh:
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_room() -> int | None:
    """memory.max - memory.current of this process's cgroup (v2), when it has a limit."""
    try:
        rel = Path("/proc/self/cgroup").read_text().strip().split("\n")[0].split(":", 2)[2]
        folder = Path("/sys/fs/cgroup") / rel.lstrip("/")
        limit = (folder / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(0, int(limit) - int((folder / "memory.current").read_text().strip()))
    except (OSError, ValueError, IndexError):
        return None
