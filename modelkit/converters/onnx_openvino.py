"""Edge onnx -> openvino: OpenVINO's ONNX frontend (`openvino.convert_model`) written as an IR, `NAME_openvino/`
holding model.xml + model.bin (one folder, so one rename publishes both files).

`modelkit convert m.keras --to openvino` plans keras -> onnx -> openvino and verifies this hop against the ONNX
source (onnxruntime) like every other. Weights are saved as they are: `openvino.save_model` compresses them to
fp16 by default, which would make the artifact lossy without saying so; compress_to_fp16=False keeps float32.
OpenVINO is imported only when the edge runs.

`quantize="bf16"` (`--quantize bf16`) keeps the float32 weights and records in the IR's rt_info
(runtime_options / INFERENCE_PRECISION_HINT) that it runs in bf16; the engine compiles it so unless the caller
asks for a precision. Lossy like the other modes, the hop is judged by the accuracy gate (top-1 drop on labelled
data, default at most 0.01), not by atol.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..formats import OPENVINO_BIN, OPENVINO_XML, Format
from .registry import Tolerance, converter

# Same float32 graph on another engine (f32 pinned): OpenVINO fuses ops and sums in its own order. Measured against
# onnxruntime: 3e-8 on the digits CNN, 1.2e-4 on MobileNetV2's logits (std 4; keras -> onnx itself needed 1.3e-4
# there, judged at float32's own error, which this hop cannot measure: its source is ONNX, no float64 reference).
# 5e-4 passes float32's reordering on deep nets and is still far below what bf16 does to the same logits (about
# 1e-1) or a real mistake (a wrong layout or op, > 1e-2).
TOLERANCE = Tolerance(atol=5e-4, min_cosine=0.9999)


PRECISION_KEY = ["runtime_options", "INFERENCE_PRECISION_HINT"]  # where an IR records the precision it runs at


@converter(Format.ONNX, Format.OPENVINO, tolerance=TOLERANCE, options={"quantize": "none"})
def onnx_to_openvino(src: Path, dest: Path, quantize: str = "none") -> dict[str, Any]:
    from . import quantize as q

    mode = q.check_mode(quantize, Format.OPENVINO)
    from .._require import require
    from ..errors import ConversionError
    from ..runtime.openvino import ov_errors
    from ..safety import check_onnx_external_data

    check_onnx_external_data(src)  # before OpenVINO's frontend reads any external-data file
    ov = require("openvino", "openvino")
    try:
        model = ov.convert_model(str(src))
    except ov_errors() as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConversionError(f"OpenVINO could not convert {src.name}: {first}") from exc
    if mode == "bf16":
        model.set_rt_info("bf16", PRECISION_KEY)
    dest.mkdir()
    ov.save_model(model, str(dest / OPENVINO_XML), compress_to_fp16=False)
    if not (dest / OPENVINO_BIN).is_file():  # a model without weights still gets its (empty) .bin
        (dest / OPENVINO_BIN).write_bytes(b"")
    return {"quantization": mode, "versions": {"openvino": ov.__version__.split("-")[0]}}
