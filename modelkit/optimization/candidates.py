"""Which artifacts `modelkit optimize` tries for a target: format x precision x threads, as plain dicts.

A candidate is one (format, quantization) build, measured at each thread count. What fits a target is
written here, not guessed: the engines that run on that machine, each with the precisions it has
(modelkit.converters.quantize.MODES_BY_TARGET). Formats whose engine is not installed are listed as
"skipped" with the extra to install, so the report says what was not tried and why.
"""
from __future__ import annotations

import importlib.util
from typing import Any

from ..errors import OptimizeError

# target -> formats measured for it, roughly best-first (the order builds run in while the budget lasts)
FORMATS: dict[str, tuple[str, ...]] = {
    "server-cpu": ("onnx", "openvino", "tflite", "tvm", "torchscript", "pt2", "saved_model", "executorch"),
    # another machine's: built and gated here, not measured here (optimization/elsewhere.py)
    "edge-arm64": ("tflite", "onnx", "tvm"),
    "mobile-arm64": ("tflite", "onnx", "tvm"),
    "edge-armv7": ("tflite", "tvm"),
}
# format -> (engine, module that must import, pip extra)
ENGINES: dict[str, tuple[str, str, str]] = {
    "onnx": ("onnxruntime", "onnxruntime", "onnx"),
    "openvino": ("openvino", "openvino", "openvino"),
    "tflite": ("litert", "ai_edge_litert", "tflite"),
    "tvm": ("tvm", "tvm", "tvm"),
    "torchscript": ("torch", "torch", "torch"),
    "pt2": ("torch", "torch", "torch"),
    "saved_model": ("tensorflow", "tensorflow", "tensorflow"),
    "executorch": ("executorch", "executorch", "executorch"),
}
# precisions tried per format, beyond fp32 (None): only those that can be faster or smaller
PRECISIONS: dict[str, tuple[str | None, ...]] = {
    "onnx": (None, "dynamic-int8", "int8"),
    "openvino": (None, "bf16", "int8"),
    "tflite": (None, "fp16", "dynamic-int8", "int8"),
    "executorch": (None, "int8"),
}
# --package target -> the formats its server runs (modelkit.serving.packagers); the search keeps to them
PACKAGE_FORMATS: dict[str, tuple[str, ...]] = {
    "triton": ("onnx", "saved_model", "torchscript", "openvino"),
    "kserve": ("onnx", "saved_model", "torchscript", "openvino"),
    "tf-serving": ("saved_model",),
    "torchserve": ("torchscript",),
    "browser": ("onnx",),  # onnxruntime-web runs the ONNX file; measured here with native onnxruntime (a proxy)
}
PRECISION_NAMES = {None: "fp32", "fp16": "fp16", "bf16": "bf16", "dynamic-int8": "dynamic-int8", "int8": "int8"}


def supported_targets() -> tuple[str, ...]:
    return tuple(FORMATS)


def check_target(target: str) -> str:
    """The target name, if optimize has candidates for it; else OptimizeError saying what to do."""
    from ..targets import registry

    if target in FORMATS:
        return target
    if target not in registry.names():
        raise OptimizeError(f"unknown target '{target}'; optimize targets: {', '.join(FORMATS)} "
                            "(all targets: modelkit targets)")
    raise OptimizeError(f"optimize has no candidates for {target} here (it needs its device to measure them on); "
                        f"compile for it with `modelkit compile MODEL --target {target}`; optimize targets: "
                        f"{', '.join(FORMATS)}")


def elsewhere(target: str) -> bool:
    """Whether the target's artifacts run on another machine than this one (built and gated here, not measured)."""
    from ..targets import registry

    return registry.get(target).cross


def thread_counts(threads: tuple[int, ...] | None = None) -> tuple[int, ...]:
    """The thread counts to try: given (at most the CPUs this process may use: more are measured here as
    time-sliced threads, which says nothing of a bigger machine), else 1 and every core (and the powers of two
    between)."""
    from ..bench.roofline import allowed_cpus

    cores = allowed_cpus()
    if threads:
        counts = tuple(sorted(set(int(t) for t in threads)))
        if counts[0] < 1 or counts[-1] > cores:
            raise OptimizeError(f"--threads {','.join(map(str, counts))}: thread counts run from 1 to the {cores} "
                                "CPUs this process may use here; candidates are measured on this machine")
        return counts
    auto = {1, cores}
    t = 2
    while t < cores:
        auto.add(t)
        t *= 2
    return tuple(sorted(auto))


def installed(fmt: str) -> bool:
    return importlib.util.find_spec(ENGINES[fmt][1]) is not None


def plan(target: str, formats: tuple[str, ...] | None = None, precisions: tuple[str, ...] | None = None,
         labelled: bool = True, package: str | None = None, unlabelled: str | None = None) -> list[dict[str, Any]]:
    """The builds to try for `target`, best-first: one dict per (format, quantize), status "planned" or "skipped"
    with the reason (engine not installed; a lossy precision without labelled data to gate it). With a
    `package` target, only the formats its server runs."""
    allowed = FORMATS[check_target(target)]
    if package is not None:
        servable = PACKAGE_FORMATS[package]
        refused = [f for f in formats or () if f not in servable]
        if refused:
            raise OptimizeError(f"--package {package} serves {', '.join(servable)}, not {', '.join(refused)}")
        allowed = tuple(f for f in allowed if f in servable)
    if formats:
        unknown = [f for f in formats if f not in allowed]
        if unknown:
            raise OptimizeError(f"format(s) {', '.join(unknown)} not measured for {target}; "
                                f"valid: {', '.join(allowed)}")
        allowed = tuple(f for f in allowed if f in formats)
    wanted = None if not precisions else {_precision(p) for p in precisions}
    builds = []
    for fmt in allowed:
        for q in PRECISIONS.get(fmt, (None,)):
            if wanted is not None and q not in wanted:
                continue
            build = {"build": build_name(fmt, q), "format": fmt, "quantize": q, "engine": ENGINES[fmt][0],
                     "target": target, "status": "planned", "reason": None}
            if not installed(fmt):
                build.update(status="skipped", reason=f"{ENGINES[fmt][1]} is not installed "
                                                      f"(pip install 'modelkit[{ENGINES[fmt][2]}]')")
            elif q is not None and not labelled:
                build.update(status="skipped", reason=unlabelled or "no labelled data to gate its accuracy (--data "
                                                                    "with 'y')")
            elif fmt == "openvino" and q == "bf16" and not _cpu_has_bf16():
                build.update(status="skipped", reason=NO_BF16)
            elif package == "triton" and fmt == "openvino" and q is None and _cpu_has_bf16():
                build.update(status="skipped", reason=TRITON_OPENVINO_F32)
            builds.append(build)
    return builds


# Triton's openvino backend has no f32 setting (serving/packagers/triton.py): an "exact" fp32 candidate measured
# here in f32 would win on exactness, then run in bf16 in the package
TRITON_OPENVINO_F32 = ("Triton's openvino backend has no f32 setting: on this CPU (AVX-512 bf16 / AMX) it runs the "
                       "IR in bf16, which openvino-bf16 measures; exact OpenVINO: --package kserve")


NO_BF16 = ("this CPU has no bf16 arithmetic (AVX512_BF16 or AMX): OpenVINO would run it in f32, and its accuracy "
           "gate would measure f32")


def _cpu_has_bf16() -> bool:
    """runtime.openvino.computes_bf16, imported when a plan asks (tests set this one)."""
    from ..runtime.openvino import computes_bf16

    return computes_bf16()


def build_name(fmt: str, quantize: str | None) -> str:
    return f"{fmt}-{PRECISION_NAMES[quantize]}"


def with_threads(build: dict[str, Any], threads: tuple[int, ...] | None) -> list[dict[str, Any]]:
    """One candidate per thread count of a build (its artifact, size and gate shared); None: one candidate, its
    threads left to the device (a target measured elsewhere)."""
    if threads is None:
        return [{**build, "key": build["build"], "threads": None}]
    return [{**build, "key": f"{build['build']}-t{t}", "threads": t} for t in threads]


def _precision(name: str) -> str | None:
    from ..converters.quantize import normalize

    key = normalize(name)
    return None if key == "none" else key
