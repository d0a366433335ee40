"""KServe package: an InferenceService manifest next to the Triton or TF Serving package it serves.

    OUT/triton/NAME/...  or  OUT/tf-serving/NAME/...  or  OUT/openvino/NAME/VERSION/model.xml|bin
    OUT/inferenceservice.yaml                           serving.kserve.io/v1beta1 InferenceService

Runtime by format: SavedModel -> TF Serving (kserve-tensorflow-serving, REST v1); ONNX and TorchScript
-> Triton (kserve-tritonserver, Open Inference Protocol v2); an OpenVINO IR -> OpenVINO Model Server
(kserve-openvino, modelFormat openvino, v2; it reads --model_path=/mnt/models holding the version folders),
with --plugin_config pinning the precision modelkit runs the IR at (f32, or the bf16 the IR records): OVMS
would otherwise compile with OpenVINO's CPU default, bf16 on AMX machines. storage_uri must point at the
uploaded folder: the Triton repository root, or the model folder NAME/ (holding the versions) for TF Serving
and OVMS.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from ...formats import Format
from ..errors import PackagingError
from . import openvino_ir, tf_serving, triton

RUNTIMES = {"triton": ("kserve-tritonserver", "triton", "v2"),
            "tf-serving": ("kserve-tensorflow-serving", "tensorflow", "v1"),
            "openvino": ("kserve-openvino", "openvino", "v2")}
DEFAULT_RUNTIME = {Format.SAVED_MODEL: "tf-serving", Format.OPENVINO: "openvino"}  # others: triton


def k8s_name(name: str) -> str:
    """A DNS-1123 label: lowercase letters, digits and '-'."""
    s = re.sub(r"[^a-z0-9-]", "-", name.lower()).strip("-")[:63].strip("-")
    return s or "model"


def plugin_config(precision: str, threads: int | None = None) -> str:
    """OVMS' --plugin_config value: the IR's precision pinned, latency hint, and the threads when given
    (modelkit's engine config for them)."""
    from ...runtime.openvino import config_for

    return json.dumps(config_for(precision, threads=threads))


def manifest(name: str, runtime: str, storage_uri: str, cpu: str = "1", memory: str = "2Gi",
             args: list[str] | None = None) -> dict[str, Any]:
    rt, fmt_name, protocol = RUNTIMES[runtime]
    model: dict[str, Any] = {"modelFormat": {"name": fmt_name}, "runtime": rt, "protocolVersion": protocol,
                             "storageUri": storage_uri}
    if args:
        model["args"] = args
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": k8s_name(name), "annotations": {"modelkit/model-name": name,
                                                               "modelkit/package": runtime}},
        "spec": {"predictor": {
            "minReplicas": 1,
            "model": {
                **model,
                "resources": {"requests": {"cpu": cpu, "memory": memory},
                              "limits": {"cpu": cpu, "memory": memory}},
            },
        }},
    }


def build(artifact: Path, fmt: Format, tmp: Path, *, dest: Path, name: str, version: int,
          runtime: str | None = None, storage_uri: str | None = None, threads: int | None = None,
          **options: Any) -> None:
    import yaml

    runtime = runtime or DEFAULT_RUNTIME.get(fmt, "triton")
    if runtime not in RUNTIMES:
        raise PackagingError(f"unknown KServe runtime '{runtime}'; valid: {', '.join(RUNTIMES)}")
    if runtime == "openvino" and fmt != Format.OPENVINO:
        raise PackagingError(f"the KServe openvino runtime (OpenVINO Model Server) is packaged for OpenVINO IRs; "
                             f"{artifact} is {fmt.value} (modelkit convert MODEL --to openvino, or --runtime triton)")
    sub = tmp / runtime
    sub.mkdir()
    args = None
    if runtime == "triton":
        triton.build(artifact, fmt, sub, dest=dest / runtime, name=name, version=version, threads=threads,
                     **options)
        default_uri = f"pvc://models/{name}/triton"
    elif runtime == "openvino":
        _, precision = openvino_ir.place_ir(artifact, sub / name / str(version))  # checked, loadable
        args = [f"--plugin_config={plugin_config(precision, threads)}"]
        default_uri = f"pvc://models/{name}/openvino/{name}"
    else:
        tf_serving.build(artifact, fmt, sub, dest=dest / runtime, name=name, version=version, **options)
        default_uri = f"pvc://models/{name}/tf-serving/{name}"
    doc = manifest(name, runtime, storage_uri or default_uri, args=args)
    where = f"the repository root (holding {name}/)" if runtime == "triton" else f"{name}/ (holding the versions)"
    placeholder = ""
    if storage_uri is None:  # a guess would deploy a predictor that finds no model: say so, loudly
        placeholder = (f"# storageUri is a PLACEHOLDER ({default_uri}): no --storage-uri was given; edit it before "
                       "kubectl apply\n")
        print(f"warning: KServe: no --storage-uri; inferenceservice.yaml points at the placeholder {default_uri}: "
              f"upload {runtime}/ and edit storageUri, or package again with --storage-uri URI",
              file=sys.stderr, flush=True)
    text = ("# Generated by modelkit. Upload the package folder to storage and point storageUri at it:\n"
            f"#   {runtime}: {where}\n" + placeholder + yaml.safe_dump(doc, sort_keys=False))
    (tmp / "inferenceservice.yaml").write_text(text)
