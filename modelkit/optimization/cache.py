"""The measurement cache of `modelkit optimize`: a rerun, or a run with other limits, reuses what was measured.

One JSON file per key under `cache_root()/optimize/measured/` (or `cache_dir`), written atomically (a temporary
file beside it, then os.replace), so a reader never sees half a file; a file that is corrupt or partial anyway
(a full disk, an edit) reads as a miss, never as an error. A measurement key covers what the figures depend on:
the artifact's bytes, threads, batch, the data, the mode of running it, this machine (CPU model and the CPUs
this process may use) and the modelkit version.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import re
from pathlib import Path
from typing import Any

_KEY = re.compile(r"[0-9a-f]{64}")
FORMAT_VERSION = 1


def _cpuinfo_text() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def machine_id() -> dict[str, Any]:
    """What identifies this machine for timings: the CPU model name, its logical CPUs (from /proc/cpuinfo),
    the CPUs this process may run on, and the architecture."""
    from ..bench.roofline import allowed_cpus, parse_cpuinfo

    info = parse_cpuinfo(_cpuinfo_text())
    return {"cpu": info["model"] or platform.processor() or platform.machine(), "logical_cpus": info["logical_cpus"],
            "allowed_cpus": allowed_cpus(), "arch": platform.machine()}


def _version() -> str:
    import modelkit

    return modelkit.__version__


def _digest(fields: dict[str, Any]) -> str:
    text = json.dumps(fields, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def measurement_key(artifact_sha256: str, threads: int | None, batch: int, data_sha256: str | None,
                    mode: str | None, extra: dict[str, Any] | None = None) -> str:
    """The cache key (64 hex digits) of one candidate's measurement on this machine with this modelkit;
    `extra` (engine versions, say) goes into it too."""
    return _digest({"kind": "measured", "artifact": artifact_sha256, "threads": threads, "batch": batch,
                    "data": data_sha256, "mode": mode, "machine": machine_id(), "modelkit": _version(),
                    "extra": extra or {}})


def build_key(source_sha256: str, target: str, fmt: str, quantize: str | None, gate: dict[str, Any] | None,
              extra: dict[str, Any] | None = None) -> str:
    """The cache key (64 hex digits) of one build: the source model, target, format, quantization, its gate's
    settings and the modelkit version (and `extra`)."""
    return _digest({"kind": "build", "source": source_sha256, "target": target, "format": fmt,
                    "quantize": quantize, "gate": gate or {}, "modelkit": _version(), "extra": extra or {}})


def measured_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """`cache_dir`, else `cache_root()/optimize/measured`."""
    if cache_dir is not None:
        return Path(cache_dir)
    from .._cache import cache_root

    return cache_root() / "optimize" / "measured"


def lookup(key: str, cache_dir: str | os.PathLike | None = None) -> dict[str, Any] | None:
    """The measurement stored under `key`, or None: not stored, unreadable, corrupt or partial."""
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        return None
    try:
        record = json.loads((measured_dir(cache_dir) / f"{key}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):  # ValueError covers JSONDecodeError and UnicodeDecodeError
        return None
    if (not isinstance(record, dict) or record.get("key") != key or record.get("format") != FORMAT_VERSION
            or not isinstance(record.get("measurement"), dict)):
        return None
    return record["measurement"]


def _plain(o: Any) -> Any:
    """numpy scalars and arrays as Python numbers and lists; anything else as its str."""
    for name in ("item", "tolist"):
        if hasattr(o, name):
            try:
                return getattr(o, name)()
            except (TypeError, ValueError):
                pass
    return str(o)


def store(key: str, measurement: dict[str, Any], cache_dir: str | os.PathLike | None = None) -> bool:
    """Write `measurement` under `key` atomically; False (nothing written) when the cache folder cannot be
    written, since a cache that cannot be kept must not stop the run."""
    if not _KEY.fullmatch(key):
        raise ValueError(f"not a cache key: {key!r} (use measurement_key)")
    from .. import _atomic

    text = json.dumps({"format": FORMAT_VERSION, "key": key, "measurement": measurement}, default=_plain,
                      indent=1, sort_keys=True)
    try:
        _atomic.write_text(measured_dir(cache_dir) / f"{key}.json", text)
    except OSError:  # an OutputPathError too: a read-only cache, a file where its folder should be
        return False
    return True
