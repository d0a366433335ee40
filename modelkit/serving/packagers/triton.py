"""Triton model repository: NAME/config.pbtxt + NAME/VERSION/<model file>, config from the Signature.

Platforms: onnxruntime_onnx (model.onnx), tensorflow_savedmodel (model.savedmodel/), pytorch_libtorch
(model.pt; tensors named <name>__<index> as the libtorch backend requires); the openvino backend
(`backend: "openvino"`, VERSION/model.xml + VERSION/model.bin). The openvino backend fixes the batch at
max_batch_size when batching is on and refuses smaller batches unless ENABLE_BATCH_PADDING is YES
(triton-inference-server/openvino_backend), so a batched config sets it; max_batch_size 0 keeps the IR's
dynamic batch instead.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

from ...formats import Format, manifest_path
from ...spec import Signature, TensorSpec
from ..errors import PackagingError
from . import openvino_ir, signature_of

PLATFORM = {Format.ONNX: ("onnxruntime_onnx", "model.onnx"),
            Format.SAVED_MODEL: ("tensorflow_savedmodel", "model.savedmodel"),
            Format.TORCHSCRIPT: ("pytorch_libtorch", "model.pt"), Format.OPENVINO: ("openvino", "model.xml")}
# the per-model intra-op thread setting of each backend (TF's is server-wide: --backend-config=tensorflow,...)
THREAD_KEYS = {Format.ONNX: "intra_op_thread_count", Format.TORCHSCRIPT: "INTRA_OP_THREAD_COUNT",
               Format.OPENVINO: "INFERENCE_NUM_THREADS"}
BACKENDS = {Format.OPENVINO}  # named by `backend:` (a backend, not a platform); the others by `platform:`
TYPES = {"bool": "TYPE_BOOL", "uint8": "TYPE_UINT8", "uint16": "TYPE_UINT16", "uint32": "TYPE_UINT32",
         "uint64": "TYPE_UINT64", "int8": "TYPE_INT8", "int16": "TYPE_INT16", "int32": "TYPE_INT32",
         "int64": "TYPE_INT64", "float16": "TYPE_FP16", "float32": "TYPE_FP32", "float64": "TYPE_FP64"}


def tensor_names(sig: Signature, fmt: Format) -> tuple[list[str], list[str]]:
    if fmt == Format.TORCHSCRIPT:
        return ([f"{s.name}__{i}" for i, s in enumerate(sig.inputs)],
                [f"{s.name}__{i}" for i, s in enumerate(sig.outputs)])
    if fmt == Format.SAVED_MODEL:  # the signature's own keys: 'user-id' is 'user_id' there (spec.tf_input_names)
        from ...spec import tf_input_names

        return list(tf_input_names(sig.input_names).values()), sig.output_names
    return sig.input_names, sig.output_names


def config_pbtxt(name: str, sig: Signature, fmt: Format, max_batch_size: int = 32, max_delay_ms: float = 2.0,
                 instances: int = 1, kind: str = "KIND_CPU", precision: str = "f32", threads: int | None = None) -> str:
    """config.pbtxt from the signature; precision: an OpenVINO IR's ('bf16' adds the backend's HINT_BF16);
    threads: the backend's intra-op threads per instance (THREAD_KEYS; a SavedModel's are set server-wide)."""
    if fmt not in PLATFORM:
        raise PackagingError(f"Triton has no backend for {fmt.value} here; package onnx, saved_model, "
                             "torchscript or openvino (modelkit convert MODEL --to onnx)")
    platform, filename = PLATFORM[fmt]
    batched = max_batch_size > 0 and all(s.rank >= 1 and s.shape[0] is None for s in (*sig.inputs, *sig.outputs))
    in_names, out_names = tensor_names(sig, fmt)

    def block(specs: tuple[TensorSpec, ...], names: list[str]) -> str:
        items = []
        for s, n in zip(specs, names):
            if s.dtype not in TYPES:
                raise PackagingError(f"tensor '{s.name}': dtype {s.dtype} has no Triton type")
            dims = s.shape[1:] if batched else s.shape
            dims_s = ", ".join("-1" if d is None else str(d) for d in dims) or ""
            if not dims_s:
                dims_s = "1"  # Triton needs at least one dim; a per-row scalar is [1] with reshape
                items.append(f'  {{\n    name: "{n}"\n    data_type: {TYPES[s.dtype]}\n    dims: [ 1 ]\n'
                             f'    reshape: {{ shape: [ ] }}\n  }}')
                continue
            items.append(f'  {{\n    name: "{n}"\n    data_type: {TYPES[s.dtype]}\n    dims: [ {dims_s} ]\n  }}')
        return ",\n".join(items)

    key = "backend" if fmt in BACKENDS else "platform"
    lines = [f'name: "{name}"', f'{key}: "{platform}"', f"max_batch_size: {max_batch_size if batched else 0}"]
    if fmt != Format.SAVED_MODEL:
        lines.append(f'default_model_filename: "{filename}"')
    lines += [f"input [\n{block(sig.inputs, in_names)}\n]", f"output [\n{block(sig.outputs, out_names)}\n]"]
    if batched:
        lines.append(f"dynamic_batching {{\n  max_queue_delay_microseconds: {int(max_delay_ms * 1000)}\n}}")
    lines.append(f"instance_group [\n  {{\n    count: {instances}\n    kind: {kind}\n  }}\n]")
    params: dict[str, str] = {}
    if fmt == Format.OPENVINO:
        from ...runtime.openvino import config_for

        params["PERFORMANCE_HINT"] = config_for()["PERFORMANCE_HINT"]  # modelkit's engine default
        if batched:
            params["ENABLE_BATCH_PADDING"] = "YES"  # else any batch below max_batch_size is an error
        if precision == "bf16":
            params["HINT_BF16"] = "YES"
    if threads is not None and fmt in THREAD_KEYS:
        params[THREAD_KEYS[fmt]] = str(int(threads))
    if params:
        lines.append("parameters [\n" + ",\n".join(
            f'  {{\n    key: "{k}"\n    value: {{ string_value: "{v}" }}\n  }}' for k, v in params.items()) + "\n]")
    return "\n".join(lines) + "\n"


def build(artifact: Path, fmt: Format, tmp: Path, *, dest: Path, name: str, version: int,
          max_batch_size: int = 32, max_delay_ms: float = 2.0, threads: int | None = None, **_: Any) -> None:
    """tmp/NAME/config.pbtxt and tmp/NAME/VERSION/<model>; threads: the backend's intra-op threads."""
    model_dir = tmp / name
    if fmt == Format.OPENVINO:  # the pair itself in VERSION/ (no manifest: Triton reads only the IR)
        sig, precision = openvino_ir.place_ir(artifact, model_dir / str(version))
        (model_dir / "config.pbtxt").write_text(config_pbtxt(name, sig, fmt, max_batch_size, max_delay_ms,
                                                             precision=precision, threads=threads))
        if precision == "f32":
            print("warning: Triton's openvino backend has no f32 setting: on CPUs with AMX or AVX-512 bf16 OpenVINO "
                  "runs the IR in bf16 (lossy; docs/openvino.md). For exact results serve it with modelkit serve, "
                  "or KServe (--for kserve pins f32), or package the ONNX model", file=sys.stderr, flush=True)
        return
    sig = signature_of(artifact, fmt)
    text = config_pbtxt(name, sig, fmt, max_batch_size, max_delay_ms, threads=threads)
    (model_dir / str(version)).mkdir(parents=True)
    target = model_dir / str(version) / PLATFORM[fmt][1]
    if artifact.is_dir():
        shutil.copytree(artifact, target)
    else:
        shutil.copy2(artifact, target)
    if manifest_path(artifact).is_file():  # lets `modelkit serve` read the signature from the package too
        shutil.copy2(manifest_path(artifact), manifest_path(target))
    (model_dir / "config.pbtxt").write_text(text)
