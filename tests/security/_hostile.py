"""Helpers shared by the hostile-file tests: rewriting zip members, and running code in a child process
(optionally under an address-space limit) so that a payload that does run, or an allocation that does
happen, stays out of pytest."""
from __future__ import annotations

import os
import resource
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[2]


def rewrite_zip(src: Path, dest: Path, replace: dict[str, bytes | Callable[[bytes], bytes]] | None = None,
                add: dict[str, bytes] | None = None) -> Path:
    """Copy a zip, replacing members (by full name, or by a name ending in the key) and adding others."""
    replace = dict(replace or {})
    hits = set()
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w") as zout:
        for item in zin.infolist():
            body = zin.read(item.filename)
            for key, new in replace.items():
                if item.filename == key or item.filename.endswith("/" + key):
                    body = new(body) if callable(new) else new
                    hits.add(key)
            zout.writestr(item, body)
        for name, body in (add or {}).items():
            zout.writestr(name, body)
    assert hits == set(replace), f"members not found: {set(replace) - hits}"
    return dest


def in_child(code: str, memory: int | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run Python code in a child (the project importable, TensorFlow quiet), optionally under RLIMIT_AS."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore", "TF_CPP_MIN_LOG_LEVEL": "3",
           "TF_ENABLE_ONEDNN_OPTS": "0"}

    def limit() -> None:
        if memory:
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env,
                          preexec_fn=limit, cwd=ROOT)
