"""Run an aarch64 TVM library on this x86-64 machine under qemu user-mode emulation.

An aarch64 CPython (Debian's libpython3.11:arm64 behind a tiny cross-compiled launcher) imports the
aarch64 manylinux wheels of numpy, apache-tvm-ffi and apache-tvm (runtime only: TVM_USE_RUNTIME_LIB=1)
and runs the library with the Relax VM; outputs come back through .npz files. That makes parity of
arm64 libraries checkable here. `python -m modelkit.targets.tvm.emulate setup` builds that environment
(after `make setup-cross` installed the apt packages); without it, arm64 libraries are ELF-checked only.
armv7 has no TVM runtime wheel on PyPI, so armv7 libraries stay ELF-checked only.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import EngineNotInstalledError, LoadError
from ...formats import Format
from ...runtime.base import Model
from ...spec import Signature

WHEELS = ("numpy==2.4.6", "ml_dtypes==0.5.4", "apache-tvm-ffi==0.1.14.post1", "apache-tvm==0.27.0.post1")
LIBPYTHON = Path("/usr/lib/aarch64-linux-gnu/libpython3.11.so.1.0")
CROSS_LIBS = "/usr/aarch64-linux-gnu/lib"  # libstdc++ / libgcc_s for aarch64 from the cross toolchain
_RUN = r"""
import sys, numpy as np, tvm
from tvm.runtime.vm import VirtualMachine
lib, inp, out, names = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(",")
vm = VirtualMachine(tvm.runtime.load_module(lib), tvm.cpu())
data = np.load(inp, allow_pickle=False)
res = vm["main"](*[tvm.runtime.tensor(data[n]) for n in names])
res = [res] if hasattr(res, "numpy") else list(res)
np.savez(out, *[r.numpy() for r in res])
"""


def env_dir() -> Path:
    from ..._cache import cache_root

    return cache_root() / "qemu-aarch64"


def available() -> str | None:
    """None when aarch64 libraries can run here under qemu, else why not."""
    d = env_dir()
    if shutil.which("qemu-aarch64") is None:
        return "qemu-aarch64 is not installed (apt-get install -y qemu-user)"
    if not (d / "python3.11-aarch64").is_file() or not (d / "site" / "tvm").is_dir():
        return f"no aarch64 Python with the TVM runtime in {d} (python -m modelkit.targets.tvm.emulate setup)"
    return None


def runtime_env() -> dict[str, str]:
    """The environment of the emulated aarch64 Python: its site folder, TVM's runtime only, one thread."""
    return {**os.environ, "PYTHONHOME": "/usr", "PYTHONPATH": str(env_dir() / "site"), "TVM_USE_RUNTIME_LIB": "1",
            "LD_LIBRARY_PATH": CROSS_LIBS, "OPENBLAS_NUM_THREADS": "1", "OPENBLAS_CORETYPE": "ARMV8",
            "TVM_NUM_THREADS": "1"}  # OpenBLAS' thread start-up spins forever under qemu without these


def setup() -> Path:
    """Build the aarch64 Python environment: the launcher, then the aarch64 wheels unpacked into site/."""
    from ...safety.archive import safe_extract

    d = env_dir()
    if not LIBPYTHON.is_file() or shutil.which("aarch64-linux-gnu-gcc") is None:
        raise EngineNotInstalledError("needs libpython3.11:arm64 and gcc-aarch64-linux-gnu: dpkg --add-architecture "
                                      "arm64 && apt-get update && apt-get install -y libpython3.11:arm64 "
                                      "gcc-aarch64-linux-gnu qemu-user")
    d.mkdir(parents=True, exist_ok=True)
    src = d / "launcher.c"
    src.write_text("extern int Py_BytesMain(int, char **);\nint main(int c, char **v) { return Py_BytesMain(c, v); }\n")
    subprocess.run(["aarch64-linux-gnu-gcc", "-o", str(d / "python3.11-aarch64"), str(src), str(LIBPYTHON),
                    f"-Wl,-rpath,{LIBPYTHON.parent}"], check=True)
    with tempfile.TemporaryDirectory() as wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                        "--platform", "manylinux_2_28_aarch64", "--python-version", "3.11", "-d", wheels,
                        *WHEELS], check=True)
        site = d / "site"
        for whl in Path(wheels).glob("*.whl"):
            safe_extract(whl, site)  # members checked: nothing outside site/, no links
    import typing_extensions

    shutil.copy(typing_extensions.__file__, d / "site" / "typing_extensions.py")
    return d


class EmulatedModel(Model):
    """A TVM library for aarch64, run by the aarch64 TVM runtime under qemu (one process per call)."""

    format = Format.TVM
    engine = "tvm (qemu-aarch64)"

    def __init__(self, path: Path, signature: Signature, timeout: float = 600.0):
        why = available()
        if why is not None:
            raise EngineNotInstalledError(f"cannot emulate aarch64 here: {why}")
        super().__init__(path, signature)
        self.timeout = timeout

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        d, env = env_dir(), runtime_env()
        with tempfile.TemporaryDirectory(prefix="modelkit-qemu-") as td:
            inp, out = Path(td) / "in.npz", Path(td) / "out.npz"
            np.savez(inp, **inputs)
            proc = subprocess.run(["qemu-aarch64", "-L", "/", str(d / "python3.11-aarch64"), "-c", _RUN,
                                   str(self.path), str(inp), str(out), ",".join(self.signature.input_names)],
                                  env=env, capture_output=True, text=True, timeout=self.timeout)
            if proc.returncode != 0 or not out.is_file():
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
                raise LoadError(f"{self.path.name} failed under qemu-aarch64 (exit {proc.returncode}): "
                                + " | ".join(tail))
            with np.load(out, allow_pickle=False) as res:
                values = [res[f"arr_{i}"] for i in range(len(res.files))]
        names = self.signature.output_names
        if len(values) != len(names):
            raise LoadError(f"{self.path.name}: {len(values)} outputs under qemu, manifest names {names}")
        return dict(zip(names, values))


def verify_under_qemu(reference_path: Path, library: Path, signature: Signature, tolerance: Any) -> Any:
    """The parity report of an aarch64 library run under qemu against the ONNX model run here."""
    from ...converters.verify import compare_models
    from ...runtime import load

    return compare_models(load(reference_path), EmulatedModel(library, signature), tolerance)


if __name__ == "__main__":
    if sys.argv[1:] == ["setup"]:
        print(f"aarch64 Python + TVM runtime ready in {setup()}")
    else:
        print("usage: python -m modelkit.targets.tvm.emulate setup", file=sys.stderr)
