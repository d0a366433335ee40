"""`modelkit doctor`: which engines are installed, which formats that enables, and the machine."""
from __future__ import annotations

import os
import platform
import shutil
from importlib import metadata
from typing import Any

import click

from ._common import echo_json, table

# (distribution names to try, what it enables, pip extra)
ENGINES = [
    (("keras",), "model core, .keras", "keras"),
    (("tensorflow-cpu", "tensorflow"), "Keras backend, SavedModel, keras->onnx", "keras"),
    (("torch",), "Keras backend, TorchScript, .pt2", "torch"),
    (("jax",), "Keras backend", "jax"),
    (("onnx",), "ONNX graphs", "onnx"),
    (("onnxruntime", "onnxruntime-gpu"), "ONNX runtime engine", "onnx"),
    (("tf2onnx",), "keras->onnx", "keras"),
    (("onnxslim",), "ONNX simplification", "onnx"),
    (("ai-edge-litert",), "TFLite / LiteRT engine", "tflite"),
    (("apache-tvm",), "TVM compile", "tvm"),
    (("openvino",), "onnx->openvino, OpenVINO engine", "openvino"),
    (("executorch",), "keras->executorch (.pte), ExecuTorch engine", "executorch"),
    (("torchserve",), "TorchServe packaging", "serve"),
    (("scikit-learn",), "shipped data sets", "keras"),
]


def engine_versions() -> list[dict[str, Any]]:
    """Installed versions read from package metadata: nothing heavy is imported."""
    return [{"package": dists[0], "version": next(filter(None, map(_version, dists)), None), "enables": role,
             "extra": extra} for dists, role, extra in ENGINES]


def machine() -> dict[str, Any]:
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass  # not Linux: no flags to report
    simd = [f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "amx_tile", "neon", "asimd")
            if f in flags]
    from ..runtime.tvm_cuda import kernel_compiler
    from ..runtime.tvm_host import tvm_cuda_missing

    gpu_ort = _version("onnxruntime-gpu") is not None
    return {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "simd": simd, "nvidia_smi": shutil.which("nvidia-smi") is not None,
            "tvm_cuda": tvm_cuda_missing() or "ready",
            "tvm_cuda_kernels": kernel_compiler() or "nothing (install nvcc, or cuda-bindings with full TVM)",
            "onnxruntime_cuda": "onnxruntime-gpu installed" if gpu_ort else "CPU-only onnxruntime build"}


def tools() -> list[dict[str, Any]]:
    """The programs and optional packages some commands need beyond the engines, each with its fix (nothing
    heavy is imported: PATH lookups and package metadata only)."""
    from ..targets.tvm import emulate
    from ..targets.tvm.cross import APT_PACKAGES
    from ..web.browser import find_chromium

    rows = [
        ("java", shutil.which("java"), "TorchServe (package --for torchserve, serving the .mar)",
         "apt-get install -y openjdk-17-jre-headless"),
        ("chromium", find_chromium(), "package --for browser --verify-in-browser",
         "apt-get install -y chromium (or MODELKIT_CHROMIUM=/path/to/chrome)"),
        ("playwright", _version("playwright"), "package --for browser --verify-in-browser",
         "pip install 'modelkit[web]'"),
        ("xgboost", _version("xgboost"), "compile --tune: the XGBoost cost model (random without it, slower)",
         "pip install --no-deps xgboost==3.2.0"),
        ("tornado", _version("tornado"), "compile --rpc: TVM's RPC tracker (python -m tvm.exec.rpc_tracker)",
         "pip install 'modelkit[tvm]'"),
    ]
    for compiler, packages in APT_PACKAGES.items():
        arch = "edge-arm64, mobile-arm64" if compiler.startswith("aarch64") else "edge-armv7"
        rows.append((compiler, shutil.which(compiler), f"compile --target {arch}",
                     f"apt-get install -y {' '.join(packages)}"))
    why = emulate.available()
    rows.append(("qemu-aarch64 + runtime", None if why else "ready", "running arm64 libraries here to verify them",
                 why or ""))
    return [{"tool": t, "found": found, "needed_for": needed, "fix": "" if found else fix}
            for t, found, needed, fix in rows]


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def command(as_json: bool) -> None:
    """Show which engines are installed (with versions), what each enables, the tools some commands need
    (Java for TorchServe, Chromium for the browser check, cross compilers and qemu for arm64, xgboost for
    tuning), and this machine's CPU.

    A missing engine or tool names its fix, e.g. pip install 'modelkit[tflite]'.
    """
    engines, info, needs = engine_versions(), machine(), tools()
    if as_json:
        echo_json({"engines": engines, "tools": needs, "machine": info})
        return
    rows = [[e["package"], e["version"] or "missing", e["enables"],
             "" if e["version"] else f"pip install 'modelkit[{e['extra']}]'"] for e in engines]
    click.echo(table(["package", "version", "enables", "fix"], rows))
    click.echo("\n" + table(["tool", "found", "needed for", "fix"],
                             [[t["tool"], t["found"] or "missing", t["needed_for"], t["fix"]] for t in needs]))
    click.echo(f"\npython {info['python']} on {info['platform']}, {info['cpus']} CPUs, "
               f"SIMD: {' '.join(info['simd']) or 'unknown'}, NVIDIA GPU: {'yes' if info['nvidia_smi'] else 'no'}")
    click.echo(f"server-gpu: TVM CUDA runtime: {info['tvm_cuda']}; kernels compiled at load by: "
               f"{info['tvm_cuda_kernels']}; onnxruntime: {info['onnxruntime_cuda']}")
