"""Route 'torch' of keras -> onnx: torch.onnx's exporter (dynamo, onnxscript) on the Keras model under torch.

Used when the first route, tf2onnx, cannot convert a model: TensorFlow ops it maps to no ONNX op, or to one its
opset lacks (a bit-flags layer's BitwiseAnd, written at opset 17, where ONNX has none), whose torch lowerings
export. The Keras model is loaded
under the torch backend and exported with torch.export, every open dimension a named Dim, with the same
typed refusals as the pt2 edge (modelkit.converters._torch_dims); the program is then translated to ONNX by
torch.onnx (onnxscript's aten library). Recurrent layers run modelkit's unrolled loop while exporting
(modelkit.converters._unroll; Keras' masked loop under torch would fix the batch), so a recurrent model
converts at its fixed length (the manifest records the layers and steps). Inputs keep the Keras input
names, outputs the Keras output names, open dims are named like tf2onnx's ('batch', `<tensor>_<axis>`).
The opset defaults to 18, the lowest torch.onnx implements (asking for 17 makes it convert down, which
fails on Split). Quantization and onnxslim work as on the tf2onnx route. Verified against the Keras
model like any other hop.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..formats import Format
from .keras_onnx import TOLERANCE
from .registry import converter

OPSET = 18


@converter(Format.KERAS, Format.ONNX, backend="torch", tolerance=TOLERANCE,
           options={"opset": OPSET, "quantize": "none", "calibration_data": None, "onnxslim": False})
def keras_to_onnx_torch(src: Path, dest: Path, opset: int = OPSET, trust_unsafe_code: bool = False,
                        quantize: str = "none", calibration_data: str | None = None,
                        onnxslim: bool = False) -> dict[str, Any]:
    import logging

    import onnx
    import onnxscript
    import torch

    from .._onnx import opset_of
    from ..errors import ConversionError, first_line
    from . import _torch_dims
    from ._torch_aliases import canonical_aliases
    from ._torch_module import example_inputs, load_wrapped, versions
    from ._unroll import recurrent_layers, unrolled_rnn
    from .keras_onnx import save_onnx

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # opset and torchvision notices on every export
    module, sig = load_wrapped(src, trust_unsafe_code)
    example = example_inputs(sig)
    with unrolled_rnn() as seen:  # Keras' masked / generic recurrent loop would fix the batch (see _unroll)
        program, accepted = _torch_dims.export(module, sig, example, Path(src).name, "onnx (route 'torch')")
    canonical_aliases(program)  # torch.onnx promotes `x * 3` for aten.mul, not for aten.multiply
    try:
        exported = torch.onnx.export(program, example, dynamo=True, opset_version=int(opset),
                                     input_names=sig.input_names, output_names=sig.output_names, verbose=False)
    except Exception as exc:  # noqa: BLE001 - torch.onnx raises its own error classes (and RuntimeError)
        raise ConversionError(f"torch.onnx could not export {Path(src).name}: {type(exc).__name__}: "
                              f"{first_line(exc)}") from exc
    proto = exported.model_proto
    if [i.name for i in proto.graph.input] != sig.input_names or [o.name for o in proto.graph.output] != \
            sig.output_names:
        raise ConversionError(f"torch.onnx named the graph's inputs/outputs {[i.name for i in proto.graph.input]} / "
                              f"{[o.name for o in proto.graph.output]}, not {sig.input_names} / {sig.output_names}")
    proto, mode = save_onnx(proto, src, dest, sig, onnxslim, quantize, calibration_data)
    out = {"opset": opset_of(proto), "ir_version": int(proto.ir_version), "quantization": mode,
           "versions": {**versions(), "onnx": onnx.__version__, "onnxscript": onnxscript.__version__},
           "dim_ranges": {f"{n}:{a}": r for (n, a), r in accepted.items()}}
    if seen.steps:  # recurrent layers ran modelkit's loop, unrolled at these lengths
        out["route"] = {"unrolled": {"layers": [layer.name for layer in recurrent_layers(module.model)],
                                     "steps": sorted(set(seen.steps))}}
    return out
