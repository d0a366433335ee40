"""What the TVM engine must know about this machine, without importing TVM: its architecture, the architecture
an ELF library was built for, and whether it can run server-gpu libraries (precise reasons). The target
registry and the cross toolchains (modelkit.targets) read the same facts from here.

GPU: PyPI's apache-tvm 0.27 ships its CUDA runtime as a sidecar, `tvm/lib/libtvm_runtime_cuda.so`, which TVM
loads at import when the NVIDIA driver (`libcuda.so.1`) and the CUDA runtime it was linked against
(`libcudart.so.13` for 0.27) can be found, and silently skips otherwise (runtime-only TVM loads no backend at
import: modelkit's TVM engine loads the sidecar itself for device='cuda'). No custom TVM build is needed on
a GPU server whose driver supports that CUDA version; these checks say which piece is missing.
(onnxruntime's CUDA provider is checked where it is used: runtime.onnxruntime.providers_for.)
"""
from __future__ import annotations

import ctypes
import importlib.util
import os
import platform
import re
import struct
from pathlib import Path
from typing import Any

from ..errors import FormatError

EM_X86_64, EM_AARCH64, EM_ARM = 62, 183, 40
MACHINES = {EM_X86_64: "x86_64", EM_AARCH64: "aarch64", EM_ARM: "armv7"}

SIDECAR = "libtvm_runtime_cuda.so"
COMPILER = "libtvm_compiler.so"


def host_arch() -> str:
    """This machine's architecture as the target registry names it (x86_64, aarch64, armv7)."""
    m = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64", "armv7l": "armv7"}.get(m, m)


def default_threads(sysfs: str | os.PathLike = "/sys/devices/system/cpu") -> int:
    """Threads for TVM's pool when the caller names none: one per physical core this process may run on (its
    affinity mask), as onnxruntime starts with. TVM's own default (threading_backend.cc) is half of all the
    machine's logical CPUs on every x86-64 host, assuming two hyper-threads per core, whatever the affinity:
    one thread on a 2-core VM without SMT, where onnxruntime runs two."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    cores = set()
    for cpu in cpus:
        topology = Path(sysfs) / f"cpu{cpu}" / "topology"
        try:
            cores.add(((topology / "physical_package_id").read_text().strip(),
                       (topology / "core_id").read_text().strip()))
        except OSError:  # no topology (a container hiding /sys, another OS): one thread per allowed CPU
            return max(1, len(cpus))
    return max(1, len(cores))


def use_threads(threads: int | None = None) -> None:
    """Settle TVM's thread pool before it starts (TVM reads these once per process, when its pool starts at the
    first parallel call; a later request does not resize a running pool), unless the environment already says:
    - TVM_NUM_THREADS: `threads`, default `default_threads()` (OMP_NUM_THREADS, which TVM also reads, is kept);
    - TVM_BIND_THREADS=0: a pool smaller than the CPUs otherwise pins the *calling* thread to one core, and every
      thread the process starts after it inherits that one-core mask (an onnxruntime session or torch's pool
      created next runs on a single core)."""
    os.environ.setdefault("TVM_BIND_THREADS", "0")
    if "OMP_NUM_THREADS" in os.environ and "TVM_NUM_THREADS" not in os.environ and not threads:
        return
    os.environ.setdefault("TVM_NUM_THREADS", str(int(threads) if threads else default_threads()))


def read_elf_header(path: str | os.PathLike) -> dict[str, Any]:
    """Class, byte order, type and machine from an ELF header; FormatError if it is not an ELF file."""
    p = Path(path)
    with open(p, "rb") as fh:
        head = fh.read(20)
    if len(head) < 20 or head[:4] != b"\x7fELF":
        raise FormatError(f"{p}: not an ELF file")
    ei_class, ei_data = head[4], head[5]
    if ei_class not in (1, 2) or ei_data not in (1, 2):
        raise FormatError(f"{p}: corrupt ELF header (class {ei_class}, data {ei_data})")
    endian = "<" if ei_data == 1 else ">"
    e_type, e_machine = struct.unpack(endian + "HH", head[16:20])
    return {"bits": 32 if ei_class == 1 else 64, "endian": "little" if ei_data == 1 else "big",
            "type": {1: "relocatable", 2: "executable", 3: "shared", 4: "core"}.get(e_type, str(e_type)),
            "machine": e_machine, "arch": MACHINES.get(e_machine, f"unknown ({e_machine})")}


def _tvm_lib_folders() -> list[Path] | None:
    """The `lib` folders of the installed TVM package (the wheel's layout), without importing it; None when TVM
    is not installed."""
    spec = importlib.util.find_spec("tvm")
    if spec is None or not spec.submodule_search_locations:
        return None
    return [Path(folder) / "lib" for folder in spec.submodule_search_locations]


def tvm_cuda_sidecar() -> Path | None:
    """The CUDA runtime library inside the installed TVM package, if the wheel has one."""
    return next((lib / SIDECAR for lib in _tvm_lib_folders() or [] if (lib / SIDECAR).is_file()), None)


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


def tvm_compiler_missing() -> str | None:
    """None when TVM here can compile; otherwise why not, in words. A GPU server or a board may carry TVM's
    runtime alone (the wheel without libtvm_compiler.so, or TVM_USE_RUNTIME_LIB=1): it runs libraries, and
    TVM's compiler passes are then missing names (AttributeError deep in the importer)."""
    folders = _tvm_lib_folders()
    if folders is None:
        return "TVM is not installed: pip install 'modelkit[tvm]'"
    if os.environ.get("TVM_USE_RUNTIME_LIB") == "1":
        return "TVM_USE_RUNTIME_LIB=1 loads TVM's runtime only, which runs libraries but cannot compile them"
    for lib in folders:  # a source build finds its libraries elsewhere: only the wheel's layout is read
        if (lib / "libtvm_runtime.so").is_file() and not (lib / COMPILER).is_file():
            return (f"this TVM package has its runtime only (no {COMPILER} in {lib}): compile on a machine "
                    "with the full apache-tvm wheel (pip install 'modelkit[tvm]') and copy the library here")
    return None


def _loadable(soname: str) -> bool:
    try:
        ctypes.CDLL(soname, mode=ctypes.RTLD_LOCAL)
    except OSError:
        return False
    return True
