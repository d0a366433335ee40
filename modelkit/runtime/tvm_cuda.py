"""What the TVM engine sets up before it loads a server-gpu library on a GPU.

Seen on an H200 (docs/tvm.md, "server-gpu"): a library compiled on a build host without a GPU carries its
CUDA kernels as *source* (TVM 0.27's codegen hands the source to the CUDA runtime, which compiles it only
where that runtime is loaded; elsewhere the source is stored for "the cross-compile receiver"). The GPU
server compiles the kernels when it loads the library, through the Python callback
`tvm_callback_cuda_compile`, and:

- TVM's own callback compiles with NVRTC (the `cuda-bindings` package) or, with
  TVM_CUDA_COMPILE_MODE=nvcc, with nvcc; it asks TVM's compiler for the current target, so it fails where
  TVM is runtime-only (TVM_USE_RUNTIME_LIB=1, or a package without libtvm_compiler.so);
- runtime-only TVM also loads no backend at import, so its CUDA runtime (the wheel's
  libtvm_runtime_cuda.so) must be loaded by hand.

`prepare(index, library)` does both where needed: it loads the CUDA runtime, and, for a library carrying
source, it picks the kernel compiler: TVM's own when TVM is complete (NVRTC if installed, else nvcc, told
TVM_CUDA_NVCC_NO_FAST_MATH unless the user set it: TVM's nvcc path adds --use_fast_math), else modelkit's nvcc
callback below, which compiles for the device's own architecture without fast math, so the kernels compute what
the source says. Neither: LoadError. A library whose kernels TVM compiled at build (on a GPU host) needs none.
The variables are set for this process (setdefault: a user's own choice stands).
"""
from __future__ import annotations

import ctypes
import importlib.util
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from ..errors import LoadError
from .tvm_host import tvm_compiler_missing, tvm_cuda_missing, tvm_cuda_sidecar

CALLBACK = "tvm_callback_cuda_compile"
# the -U flags TVM's nvcc path passes, so the half / bfloat16 operators its source uses are defined
NVCC_FLAGS = ["-U__CUDA_NO_HALF_OPERATORS__", "-U__CUDA_NO_HALF_CONVERSIONS__", "-U__CUDA_NO_BFLOAT16_OPERATORS__",
              "-U__CUDA_NO_BFLOAT16_CONVERSIONS__", "-U__CUDA_NO_BFLOAT162_OPERATORS__",
              "-U__CUDA_NO_BFLOAT162_CONVERSIONS__", "--expt-relaxed-constexpr", "--expt-extended-lambda"]


def prepare(index: int, library: Path) -> None:
    """Make TVM able to load the server-gpu `library` on CUDA device `index` here (see the module's text)."""
    import tvm

    load_cuda_runtime()
    dev = tvm.cuda(index)
    if not dev.exist or not carries_cuda_source(library):
        return  # the caller names what is missing; kernels compiled at build (on a GPU host) need no compiler
    compiler = kernel_compiler()
    if compiler is None:
        raise LoadError(_NO_COMPILER)
    if compiler == "nvcc" and tvm_compiler_missing() is None:
        os.environ.setdefault("TVM_CUDA_COMPILE_MODE", "nvcc")  # TVM's default, NVRTC, is not installed
        os.environ.setdefault("TVM_CUDA_NVCC_NO_FAST_MATH", "1")  # TVM's nvcc path adds --use_fast_math
    elif compiler == "nvcc":
        import tvm_ffi

        arch = "sm_" + str(dev.compute_version).replace(".", "")
        tvm_ffi.register_global_func(CALLBACK, lambda source: nvcc_compile(str(source), arch), override=True)


def carries_cuda_source(library: Path) -> bool:
    """Whether the library holds its kernels as CUDA source (built where TVM's CUDA runtime did not load)."""
    return b'extern "C" __global__' in Path(library).read_bytes()


def kernel_compiler() -> str | None:
    """What compiles a server-gpu library's CUDA kernels when it loads here: 'NVRTC' (TVM's own, needs TVM's
    compiler and cuda-bindings), 'nvcc', or None (nothing can)."""
    if tvm_compiler_missing() is None and _has_nvrtc():
        return "NVRTC"
    return "nvcc" if shutil.which("nvcc") else None


def _has_nvrtc() -> bool:
    try:
        return importlib.util.find_spec("cuda.bindings.nvrtc") is not None
    except ImportError:  # no `cuda` package at all
        return False


_NO_COMPILER = ("this server-gpu library carries its CUDA kernels as source, compiled for this GPU when it loads, "
                "and nothing here can compile them: install the CUDA toolkit's nvcc, or NVRTC (pip install "
                "cuda-bindings) with the full apache-tvm wheel")


def nvcc_compile(source: str, arch: str) -> bytes:
    """CUDA source -> a fatbin for `arch` (e.g. 'sm_90'), with nvcc; LoadError with nvcc's first error line."""
    with tempfile.TemporaryDirectory(prefix="modelkit-nvcc-") as tmp:
        src, out = Path(tmp) / "kernels.cu", Path(tmp) / "kernels.fatbin"
        src.write_text(source)
        cmd = ["nvcc", "--fatbin", "-O3", "-arch", arch, *NVCC_FLAGS, "-o", str(out), str(src)]
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if run.returncode != 0:
            first = next((ln for ln in run.stderr.splitlines() if "error" in ln), run.stderr.strip()[:200])
            raise LoadError(f"nvcc could not compile this library's CUDA kernels for {arch}: {first}")
        return out.read_bytes()


def load_cuda_runtime() -> None:
    """Load the wheel's CUDA runtime where TVM did not (runtime-only TVM loads no backend at import), as TVM's
    cuda backend loads it (RTLD_LOCAL; libtvm_runtime is global); a missing piece is left for the caller's
    tvm_cuda_missing() to name."""
    from tvm import base

    loaded = base._LOADED_LIBS  # TVM's record of the libraries it loaded, kept for extensions to read
    if "tvm_runtime_cuda" in loaded or tvm_cuda_missing() is not None:
        return
    try:
        loaded["tvm_runtime_cuda"] = ctypes.CDLL(str(tvm_cuda_sidecar()), mode=ctypes.RTLD_LOCAL)
    except OSError:
        pass
