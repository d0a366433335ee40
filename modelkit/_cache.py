"""The user's modelkit cache folder: tuning databases, the trust stores, npm packages, qemu environments."""
from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """`$MODELKIT_CACHE_DIR`, else `~/.cache/modelkit`."""
    base = os.environ.get("MODELKIT_CACHE_DIR")
    return Path(base) if base else Path(os.path.expanduser("~")) / ".cache" / "modelkit"
