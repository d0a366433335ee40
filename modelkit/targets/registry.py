"""Named compilation targets: what TVM target each one means, which formats and engines fit it.

TVM 0.27 takes target *dicts* (`{"kind": "llvm", "mcpu": ...}`), not the old strings. Users may pass
a raw TVM target dict as JSON instead of a name. Nothing heavy is imported here: `modelkit targets`
and the CLI's argument checks stay fast.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UnsupportedConversionError
from ..runtime.tvm_host import host_arch


@dataclass(frozen=True)
class Target:
    """One deployment target."""

    name: str
    description: str
    tvm: dict[str, Any]            # the TVM target dict given to tvm.target.Target
    arch: str                      # machine the library runs on: x86_64, aarch64, armv7
    device: str = "cpu"            # 'cpu' or 'cuda': where the compiled library runs
    cross_compiler: str | None = None  # C++ compiler that links the library (None: the host's)
    formats: tuple[str, ...] = ()  # artifact formats that fit this target, best first
    engines: tuple[str, ...] = ()  # runtime engines that run them there
    dynamic_batch: bool = True     # whether libraries for it may keep a dynamic batch dimension
    detected: dict[str, Any] = field(default_factory=dict)  # what was detected on this machine
    notes: str = ""

    @property
    def cross(self) -> bool:
        """True when the library is built for another machine than this one (cannot run here)."""
        return self.arch != host_arch() or self.device != "cpu"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "tvm_target": self.tvm, "arch": self.arch,
                "device": self.device, "cross_compiler": self.cross_compiler, "formats": list(self.formats),
                "engines": list(self.engines), "dynamic_batch": self.dynamic_batch, "detected": self.detected,
                "notes": self.notes}


# x86 CPU flags (as /proc/cpuinfo names them) -> the LLVM cpu they imply, newest first
_X86_CPUS = (
    ("sapphirerapids", ("amx_tile", "avx512_fp16", "avx512_bf16", "avx512_vnni")),
    ("cooperlake", ("avx512_bf16", "avx512_vnni", "avx512bw")),
    ("icelake-server", ("avx512_vbmi2", "avx512_vnni", "avx512bw")),
    ("cascadelake", ("avx512_vnni", "avx512bw", "avx512dq")),
    ("skylake-avx512", ("avx512f", "avx512bw", "avx512dq", "avx512vl")),
    ("haswell", ("avx2", "fma", "bmi2")),
    ("sandybridge", ("avx",)),
)
_SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx512_fp16",
               "amx_tile", "amx_int8", "amx_bf16")


def detect_host_cpu(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> dict[str, Any]:
    """The host x86-64 CPU as /proc/cpuinfo describes it: model, SIMD flags, the LLVM -mcpu they imply,
    and the core count. Unknown or non-x86 hosts get the generic 'x86-64' cpu."""
    info: dict[str, Any] = {"source": str(cpuinfo), "model": None, "flags": [], "mcpu": "x86-64",
                            "cores": os.cpu_count() or 1}
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        info["source"] = f"{cpuinfo} unreadable: generic x86-64"
        return info
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and info["model"] is None:
            info["model"] = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    info["flags"] = [f for f in _SIMD_FLAGS if f in flags]
    for cpu, needs in _X86_CPUS:
        if all(f in flags for f in needs):
            info["mcpu"] = cpu
            break
    return info


def _server_cpu() -> Target:
    cpu = detect_host_cpu()
    return Target(
        name="server-cpu",
        description=f"this x86-64 server's CPU, detected from {cpu['source']}: llvm -mcpu={cpu['mcpu']}, "
                    f"{cpu['cores']} cores",
        tvm={"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": cpu["mcpu"], "num-cores": int(cpu["cores"])},
        arch="x86_64", formats=("onnx", "tvm", "saved_model", "torchscript", "pt2"),
        engines=("onnxruntime", "tvm", "tensorflow", "torch"), detected=cpu,
        notes="libraries keep a dynamic batch unless tuned (tuning needs a static batch).")


_TARGETS_STATIC: dict[str, Target] = {
    "server-gpu": Target(
        name="server-gpu",
        description="NVIDIA data-center GPU (Hopper, sm_90): TVM cuda target with an x86-64 host",
        tvm={"kind": "cuda", "arch": "sm_90", "max_num_threads": 1024, "thread_warp_size": 32,
             "host": {"kind": "llvm", "mtriple": "x86_64-linux-gnu"}},
        arch="x86_64", device="cuda", formats=("onnx", "tvm"), engines=("onnxruntime[cuda]", "tvm[cuda]"),
        dynamic_batch=False,
        notes="compiling needs nvcc (CUDA toolkit); running needs an NVIDIA driver and the CUDA runtime that the "
              "PyPI apache-tvm wheel's libtvm_runtime_cuda.so links (libcudart.so.13 for TVM 0.27); `modelkit "
              "doctor` says which is missing. The ONNX model also runs on the GPU with onnxruntime-gpu: "
              "modelkit.load('m.onnx', device='cuda').",
    ),
    "mobile-arm64": Target(
        name="mobile-arm64",
        description="64-bit Arm phone-class CPU: aarch64-linux-gnu, -mcpu=cortex-a76 (NEON, dot product)",
        tvm={"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a76", "mattr": ["+neon"]},
        arch="aarch64", cross_compiler="aarch64-linux-gnu-g++", formats=("tflite", "tvm", "onnx"),
        engines=("litert", "tvm", "onnxruntime"),
        notes="cross-compiled with the Debian aarch64 toolchain; Android needs an NDK compiler instead.",
    ),
    "edge-arm64": Target(
        name="edge-arm64",
        description="64-bit Arm edge board (e.g. Raspberry Pi 4): aarch64-linux-gnu, -mcpu=cortex-a72 (NEON)",
        tvm={"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72", "mattr": ["+neon"]},
        arch="aarch64", cross_compiler="aarch64-linux-gnu-g++", formats=("tflite", "tvm", "onnx"),
        engines=("litert", "tvm", "onnxruntime"),
    ),
    "edge-armv7": Target(
        name="edge-armv7",
        description="32-bit Arm edge board: armv7a-linux-gnueabihf, -mcpu=cortex-a7 with NEON/VFPv4, hard float",
        tvm={"kind": "llvm", "mtriple": "armv7a-linux-gnueabihf", "mcpu": "cortex-a7", "mattr": ["+neon", "+vfp4"],
             "mfloat-abi": "hard"},
        arch="armv7", cross_compiler="arm-linux-gnueabihf-g++", formats=("tflite", "tvm"),
        engines=("litert", "tvm"),
    ),
}


def targets() -> dict[str, Target]:
    """Every named target (server-cpu is detected from this machine each call)."""
    return {"server-cpu": _server_cpu(), **_TARGETS_STATIC}


def names() -> list[str]:
    return list(targets())


def get(spec: str | dict[str, Any] | Target) -> Target:
    """A target by name, or from a raw TVM target dict (a dict, or its JSON text).

    Unknown names raise UnsupportedConversionError listing the valid ones.
    """
    if isinstance(spec, Target):
        return spec
    if isinstance(spec, dict):
        return from_tvm_dict(spec)
    text = str(spec).strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise UnsupportedConversionError(f"target is not valid JSON ({exc}): {text[:80]}") from exc
        return from_tvm_dict(data)
    all_targets = targets()
    if text not in all_targets:
        raise UnsupportedConversionError(f"unknown target '{text}'; valid targets: {', '.join(all_targets)} "
                                         "(or a TVM target dict as JSON, e.g. '{\"kind\": \"llvm\"}')")
    return all_targets[text]


_TRIPLE_ARCH = (("aarch64", "aarch64"), ("arm64", "aarch64"), ("armv7", "armv7"), ("arm", "armv7"),
                ("x86_64", "x86_64"))
_CROSS_CC = {"aarch64": "aarch64-linux-gnu-g++", "armv7": "arm-linux-gnueabihf-g++"}


def from_tvm_dict(data: Any) -> Target:
    """A custom target from a raw TVM target dict; its machine comes from 'mtriple' (default: host)."""
    if not isinstance(data, dict) or not isinstance(data.get("kind"), str):
        raise UnsupportedConversionError(f"a TVM target dict needs a 'kind' (e.g. 'llvm', 'cuda'); got {data!r}")
    kind = data["kind"]
    if kind not in ("llvm", "cuda", "c"):
        raise UnsupportedConversionError(f"target kind '{kind}' is not supported by modelkit; use llvm or cuda")
    host = data.get("host") if kind == "cuda" else data
    triple = str((host or {}).get("mtriple", "")) if isinstance(host, dict) else ""
    arch = host_arch()
    for prefix, a in _TRIPLE_ARCH:
        if triple.startswith(prefix):
            arch = a
            break
    return Target(name="custom", description=f"custom TVM target {json.dumps(data, sort_keys=True)}",
                  tvm=dict(data), arch=arch, device="cuda" if kind == "cuda" else "cpu",
                  cross_compiler=_CROSS_CC.get(arch) if arch != host_arch() else None,
                  formats=("tvm",), engines=("tvm",), dynamic_batch=kind != "cuda")
