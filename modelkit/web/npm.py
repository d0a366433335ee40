"""onnxruntime-web from the npm registry, installed once at build time into a cache folder.

Nothing is fetched at run time: the bundle carries the JavaScript and WebAssembly files it needs.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from ..errors import EngineNotInstalledError

ORT_WEB_VERSION = "1.30.0"
# The WebAssembly build only: ES module entry point, its loader and the SIMD wasm binary.
ORT_WEB_FILES = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")


def cache_dir() -> Path:
    from .._cache import cache_root

    return cache_root() / "npm"


def ort_web_dist(version: str = ORT_WEB_VERSION, install: bool = True) -> Path:
    """The dist folder of onnxruntime-web `version`, installing it with npm on first use."""
    prefix = cache_dir() / f"onnxruntime-web-{version}"
    dist = prefix / "node_modules" / "onnxruntime-web" / "dist"
    if all((dist / f).is_file() for f in ORT_WEB_FILES):
        return dist
    if not install:
        raise EngineNotInstalledError(f"onnxruntime-web {version} is not in {prefix}; run `make setup`")
    npm = shutil.which("npm")
    if npm is None:
        raise EngineNotInstalledError("npm is needed once to fetch onnxruntime-web for browser bundles; "
                                      "install Node.js (apt-get install nodejs npm)")
    prefix.mkdir(parents=True, exist_ok=True)
    print(f"installing onnxruntime-web@{version} from the npm registry into {prefix} ...", file=sys.stderr)
    proc = subprocess.run([npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", "--silent",
                           f"onnxruntime-web@{version}"], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0 or not all((dist / f).is_file() for f in ORT_WEB_FILES):
        raise EngineNotInstalledError(f"npm could not install onnxruntime-web@{version}: "
                                      f"{(proc.stderr or proc.stdout).strip()[-500:]}")
    return dist
