"""Can this machine run server-gpu TVM libraries? Precise reasons, without importing TVM.

PyPI's apache-tvm 0.27 ships its CUDA runtime as a sidecar, `tvm/lib/libtvm_runtime_cuda.so`, which TVM
loads at import when the NVIDIA driver (`libcuda.so.1`) and the CUDA runtime it was linked against
(`libcudart.so.13` for 0.27) can be found, and silently skips otherwise. No custom TVM build is needed on
a GPU server whose driver supports that CUDA version; these checks say which piece is missing.
(onnxruntime's CUDA provider is checked where it is used: runtime.onnxruntime.providers_for.)
"""
from __future__ import annotations

import ctypes
import importlib.util
import re
from pathlib import Path

SIDECAR = "libtvm_runtime_cuda.so"


def tvm_cuda_sidecar() -> Path | None:
    """The CUDA runtime library inside the installed TVM package, if the wheel has one."""
    spec = importlib.util.find_spec("tvm")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "lib" / SIDECAR
        if path.is_file():
            return path
    return None


def needed_cudart(sidecar: Path) -> str | None:
    """The libcudart soname the sidecar was linked against (read from its dynamic section's strings)."""
    found = re.search(rb"libcudart\.so\.\d+", sidecar.read_bytes())
    return found.group().decode() if found else None


def tvm_cuda_missing() -> str | None:
    """None when TVM's CUDA runtime can load here; otherwise what is missing, in words."""
    if importlib.util.find_spec("tvm") is None:
        return "TVM is not installed: pip install 'modelkit[tvm]'"
    sidecar = tvm_cuda_sidecar()
    if sidecar is None:
        return f"this TVM package has no CUDA runtime ({SIDECAR}); install apache-tvm from PyPI or build it with CUDA"
    if not _loadable("libcuda.so.1"):
        return "no NVIDIA driver on this machine (libcuda.so.1 not found)"
    cudart = needed_cudart(sidecar)
    if cudart and not _loadable(cudart):
        return (f"TVM's CUDA runtime needs {cudart}, which is not on the library path (install the CUDA "
                f"{cudart.rsplit('.', 1)[-1]} runtime, e.g. the CUDA toolkit, and run ldconfig)")
    return None


def _loadable(soname: str) -> bool:
    try:
        ctypes.CDLL(soname, mode=ctypes.RTLD_LOCAL)
    except OSError:
        return False
    return True
