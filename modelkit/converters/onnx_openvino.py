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

`quantize="int8"` (`--quantize int8`) quantizes the IR with NNCF's post-training quantization (`nncf.quantize`,
the tool OpenVINO makes for it; `pip install 'modelkit[openvino]'` brings it), calibrated on the samples every
int8 mode uses (the training split named by the manifest, or `--calibration-data`), preset performance
(symmetric activations and weights, per-channel weights): FakeQuantize nodes that OpenVINO's CPU plugin runs as
int8 kernels. Planned from keras, the int8 happens here, on the exact ONNX file before it (see
quantize.LAST_HOP_MODES). Judged by the accuracy gate like the other int8 modes. Recurrent ops (LSTMSequence,
GRUSequence, ...) keep float weights (NNCF's ignored scope): the CPU plugin takes only constant weights into them.
So do the ops converters.float_islands keeps float in the int8 ONNX and TFLite models (an attention mask's
penalty, the scores it joins and its Softmax; a Normalization over raw features), and activation ranges are the
min and max over the calibration samples, as onnxruntime and TFLite take them (NNCF's default, the mean of each
sample's max, clips values that only long inputs reach).
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
LOOP_WHY = ("tf2onnx wrote the model's loop (a recurrent layer's, ops.fori_loop's) as an ONNX Loop, which OpenVINO's "
            "frontend does not take")


@converter(Format.ONNX, Format.OPENVINO, tolerance=TOLERANCE, options={"quantize": "none", "calibration_data": None})
def onnx_to_openvino(src: Path, dest: Path, quantize: str = "none", calibration_data: str | None = None
                     ) -> dict[str, Any]:
    from . import quantize as q

    mode = q.check_mode(quantize, Format.OPENVINO)
    from .._require import require
    from ..errors import ConversionError, SourceRouteError
    from ..runtime.openvino import ov_errors
    from ..safety import check_onnx_external_data

    check_onnx_external_data(src)  # before OpenVINO's frontend reads any external-data file
    ov = require("openvino", "openvino")
    try:
        model = _onnx_names(_converted(ov, src), src)
    except ov_errors() as exc:
        reason = frontend_reason(exc)
        why = _torch_route_why(src, reason)
        if why:
            raise SourceRouteError(f"OpenVINO could not convert {src.name}: {reason}; {why}: convert again with "
                                   "--route torch --force (route='torch', force=True in Python): the ONNX on the way "
                                   "is then exported through torch.onnx", {"route": "torch", "why": why}) from exc
        raise ConversionError(f"OpenVINO could not convert {src.name}: {reason}") from exc
    if mode == "bf16":
        model.set_rt_info("bf16", PRECISION_KEY)
    calibration = None
    if mode == "int8":
        from .. import manifest as _manifest
        from ..runtime import load

        src_manifest = _manifest.read(src)
        sig = src_manifest.sig if src_manifest is not None else load(src).signature
        calibration = q.calibration_inputs(src_manifest, sig, calibration_data)
        model = nncf_quantized(model, calibration, src.name)
    dest.mkdir()
    ov.save_model(model, str(dest / OPENVINO_XML), compress_to_fp16=False)
    if not (dest / OPENVINO_BIN).is_file():  # a model without weights still gets its (empty) .bin
        (dest / OPENVINO_BIN).write_bytes(b"")
    versions = {"openvino": ov.__version__.split("-")[0]}
    out: dict[str, Any] = {"quantization": mode, "versions": versions}
    if calibration is not None:
        import nncf

        versions["nncf"] = nncf.__version__
        out["calibration"] = {"samples": len(next(iter(calibration.values()))), "preset": "performance",
                              "data": calibration_data or "training split (source manifest)"}
    return out


def _converted(ov: Any, src: Path) -> Any:
    """OpenVINO's model of the ONNX at `src`; one its frontend refuses that has an STFT node (it takes only a
    signal of static shape) is converted again with each STFT written as a Conv (onnx_stft.py)."""
    import tempfile

    from ..runtime.openvino import ov_errors
    from .onnx_stft import read_with_stft_as_conv

    try:
        model = ov.convert_model(str(src))
    except ov_errors():
        proto = read_with_stft_as_conv(src)
        if proto is None:  # no STFT to write otherwise (or no file onnx reads): OpenVINO's refusal stands
            raise
    else:
        if not any(r.input_value(0).get_node().get_type_name() == "Parameter" for r in model.get_results()):
            return model
        # an output that is an input (a request key returned as it came): convert_model gives the output a
        # Parameter of its own, an input 'key_1' the model does not have; its frontend read as is does not (nc143)
        from ..runtime.openvino import core

        return core().read_model(str(src))
    with tempfile.TemporaryDirectory(prefix="modelkit-stft-") as tmp:
        import onnx

        onnx.save(proto, f"{tmp}/{src.name}")
        return ov.convert_model(f"{tmp}/{src.name}")


def _onnx_names(model: Any, src: Path) -> Any:
    """`model` with each input and output named by its ONNX name alone. OpenVINO merges the names of a node it
    removes into its neighbour's port: a multiply by one right after the input (a model quantized "float8" by
    Keras, its input scale still 1) gave input 'x' a second name, 'dense/truediv:0', which the IR then reported as
    its name (nc151)."""
    ports = [p for p in (*model.inputs, *model.outputs) if len(p.get_names()) > 1]
    if ports:
        import onnx

        graph = onnx.load(str(src), load_external_data=False).graph
        names = {v.name for v in (*graph.input, *graph.output)}
        for port in ports:
            own = sorted(names & set(port.get_names()))
            if len(own) == 1:
                port.get_tensor().set_names(set(own))
    return model


def frontend_reason(exc: BaseException) -> str:
    """OpenVINO's frontend failure in one line: its summary ("No conversion rule found for operations: X",
    "Conversion is failed for: Loop-17") and the first node's reason. Its first line only names the C++ file
    that raised ("Check 'false' failed at src/frontends/common_translators/src/unconverted_ops_report.cpp:151:"),
    which says nothing of the model."""
    from ..errors import first_line

    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    summary = [ln.lstrip("- ").strip() for ln in lines[lines.index("Summary:") + 1:]] if "Summary:" in lines else []
    detail = next((f"{ln.rstrip(':')}: {nxt}" for ln, nxt in zip(lines, lines[1:])
                   if ln.startswith("While validating ONNX node")), "")
    if summary:
        return "; ".join(summary) + (f" ({detail})" if detail else "")
    plain = [ln for ln in lines if not ln.startswith("Check '")]
    return plain[0] if plain else first_line(exc)


def _torch_route_why(src: Path, reason: str) -> str:
    """Why torch.onnx's export of the same Keras model is worth a try, when OpenVINO's frontend refused an ONNX
    that tf2onnx made from it, else "". Its recurrent Loop (Keras' LSTM, GRU): the torch route's converts (a
    Conv1D-GRU classifier, parity 1.9e-8). Any other refusal: torch.onnx writes other ops for the same layers
    (nc46's einsum was one, until keras_onnx.unsqueeze_nothing_as_identity)."""
    from .routes import made_by_tf2onnx_from_keras

    if not made_by_tf2onnx_from_keras(src):
        return ""
    return LOOP_WHY if "Loop" in reason else "OpenVINO's ONNX frontend refused the graph tf2onnx wrote"


# OpenVINO ops whose weights NNCF would fake-quantize but the CPU plugin needs constant ("LSTMSequence ... expects
# Constant for port 4"): a recurrent layer keeps float weights, the rest of the model is int8
RECURRENT_OPS = frozenset({"LSTMSequence", "GRUSequence", "RNNSequence", "LSTMCell", "GRUCell", "RNNCell"})


def nncf_quantized(model: Any, calibration: dict[str, Any], src_name: str, seven_bit_weights: bool = True) -> Any:
    """`model` quantized by NNCF post-training quantization on `calibration` (one sample per step, fed by input
    name), preset performance (symmetric), min-max activation ranges, 7-bit weights (`seven_bit_weights=False`:
    8-bit everywhere, for benchmarks/bench_int8_weights.py). NNCF's logger and rich progress bars are kept off the
    terminal."""
    import logging

    from .._quiet import engine_chatter_swallowed
    from .._require import require
    from ..errors import ConversionError, first_line
    from . import quantize as q
    from .float_islands import openvino_kept_float, said_kept

    kept = openvino_kept_float(model)  # an attention mask's penalty and its Softmax (float_islands)
    said_kept(kept)
    with engine_chatter_swallowed():  # import-time notices (torch version checks) too
        nncf = require("nncf", "openvino")
        from nncf.quantization.advanced_parameters import OverflowFix, QuantizationParameters
        from nncf.quantization.range_estimator import RangeEstimatorParametersSet

        nncf.set_log_level(logging.ERROR)
        samples = list(q.iter_samples(calibration, batch=1))
        recurrent = sorted({op.get_type_name() for op in model.get_ordered_ops()} & RECURRENT_OPS)
        # activation ranges by min and max over all samples, as onnxruntime's and TFLite's calibrations take
        # them: NNCF's default (the mean over samples of each one's max) clipped a masked mean's count of real
        # tokens to 12.8 of up to 20, a padding-masked attention classifier lost 0.06 of top-1 (0.0 with this)
        # NNCF quantizes a depthwise convolution's input per channel along axis 1: in a sequence model (batch,
        # length, features) that axis is the length, and the IR ran at the calibration length only ("Subtract
        # node ... DequantizationSubtract Check 'input_shape[j] == 1' failed"): with an open size, per tensor
        per_tensor = QuantizationParameters(per_channel=False) if _open_sizes(model) else None
        # 7-bit weights in every conv and matmul (NNCF's overflow fix; its default fixes the first layer only): a
        # CPU without VNNI (AVX2) sums u8 x s8 products in 16 bits, which saturate with 8-bit weights. Measured on
        # an AVX2 EPYC: a padding-masked attention classifier lost 0.0625 of top-1 without it, 0 with it (the
        # artifact runs wherever it is deployed, so the fix is not tied to the CPU that converts); on a VNNI CPU
        # it costs no speed (benchmarks/bench_int8_weights.py)
        ranges = nncf.AdvancedQuantizationParameters(
            activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX,
            activations_quantization_params=per_tensor,
            overflow_fix=OverflowFix.ENABLE if seven_bit_weights else OverflowFix.DISABLE)
        try:  # recurrent ops stay float: the CPU plugin takes only constant weights into an LSTMSequence
            return nncf.quantize(model, nncf.Dataset(samples, lambda feed: feed),
                                 preset=nncf.QuantizationPreset.PERFORMANCE, subset_size=len(samples),
                                 ignored_scope=nncf.IgnoredScope(names=kept, types=recurrent)
                                 if recurrent or kept else None, advanced_parameters=ranges)
        except Exception as exc:  # noqa: BLE001 - NNCF raises its own and OpenVINO's types; one typed line
            first = first_line(exc)
            raise ConversionError(f"NNCF could not quantize {src_name} to int8: {first}") from exc


def _open_sizes(model: Any) -> bool:
    """Whether an input of the OpenVINO model leaves a dimension other than the batch open."""
    return any(d.is_dynamic for i in model.inputs for d in list(i.get_partial_shape())[1:])
