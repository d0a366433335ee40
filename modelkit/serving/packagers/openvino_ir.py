"""An OpenVINO IR in a server's version folder: VERSION/model.xml + VERSION/model.bin (Triton's openvino backend
and OpenVINO Model Server both read that pair), checked before it is copied, and the precision it should run at.

Servers compile an IR with OpenVINO's own defaults, and OpenVINO's CPU default on AMX / AVX-512 bf16 machines is
bf16 (lossy; docs/openvino.md). An IR does not pin f32 by itself: OpenVINO 2026.4 ignores an rt_info
runtime_options / INFERENCE_PRECISION_HINT of f32 at compile_model (measured), so the precision is set where the
server allows it (OVMS: --plugin_config; Triton's backend has no f32 key, only HINT_BF16).
"""
from __future__ import annotations

import shutil
from pathlib import Path

from ...formats import OPENVINO_BIN, OPENVINO_XML, Format, openvino_files
from ...spec import Signature
from . import signature_of


def place_ir(artifact: Path, version_dir: Path) -> tuple[Signature, str]:
    """The IR checked and copied into version_dir (copy_ir: its own typed errors first), then its signature read
    (the engine loads it when no manifest says it: an IR the engine cannot read is refused here, not in the
    server) and the precision it records: (signature, 'f32' or 'bf16')."""
    copy_ir(artifact, version_dir)
    return signature_of(artifact, Format.OPENVINO), recorded_precision(version_dir)


def copy_ir(artifact: Path, version_dir: Path) -> None:
    """Check the IR's two files as the engine does (sizes, no DTD, constants inside the .bin, no links out of
    its folder), then copy them to version_dir/model.xml and version_dir/model.bin (version_dir is created)."""
    from ...safety.openvino import check_openvino_ir

    xml, bin_ = openvino_files(artifact)
    check_openvino_ir(xml, bin_, artifact if artifact.is_dir() else None)
    version_dir.mkdir(parents=True)
    shutil.copyfile(xml, version_dir / OPENVINO_XML)
    shutil.copyfile(bin_, version_dir / OPENVINO_BIN)


def recorded_precision(version_dir: Path) -> str:
    """The precision modelkit's engine runs the IR at: the one its rt_info runtime_options /
    INFERENCE_PRECISION_HINT records ('bf16' from `modelkit convert --to openvino --quantize bf16`, or 'f16'),
    else 'f32' (runtime.openvino.recorded). Reads the copy that copy_ir checked (no DTD: plain XML)."""
    import xml.etree.ElementTree as ET

    from ...runtime.openvino import recorded

    root = ET.parse(version_dir / OPENVINO_XML).getroot()
    node = root.find("./rt_info/runtime_options/INFERENCE_PRECISION_HINT")
    return recorded(node.get("value") if node is not None else None)
