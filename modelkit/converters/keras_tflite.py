"""Edge keras -> tflite (LiteRT): TF's TFLite converter on the traced serving function, with quantization.

The Keras model is traced with the shared serving function (Keras input names, dynamic batch and
every other dimension the model leaves open, outputs named after the Keras outputs), written as a
SavedModel with a `serving_default` signature and converted with `TFLiteConverter.from_saved_model`:
variables are frozen into constants and the TFLite signature carries the clean Keras names, which the
litert engine binds by. Open dimensions stay open (shape_signature -1; the engine resizes per call);
a recurrent layer is refused (its TensorList ops need static shapes): the pair's second route,
keras_tflite_unrolled, unrolls it at a fixed length, and the third, keras_tflite_loop, loops it over any
length. Only TFLite builtin ops are allowed (no Flex/SELECT_TF_OPS, which ai-edge-litert cannot run).

Quantization modes (option `quantize`): none (fp32), fp16 (float16 weights), dynamic-int8 (int8
weights, activations quantized at run time), int8 (full integer, calibrated on real samples).
Full int8 keeps a float32 input/output interface: the converter adds one QUANTIZE op after each input
and one DEQUANTIZE before each output, so the artifact keeps the exact Signature of its source and is a
drop-in replacement (modelkit's contract: the same Signature on every artifact). An int8 interface
would save those two ops but push scale/zero-point handling onto every caller.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from .._quiet import engine_chatter_swallowed
from ..formats import Format
from .registry import Tolerance, converter

# Same float32 kernels, but TFLite folds BatchNorm into Conv and XNNPACK reorders float sums:
# measured ~1e-7 on the digits CNN; 1e-4 matches the ONNX edge and leaves room for deep nets.
TOLERANCE = Tolerance(atol=1e-4, min_cosine=0.9999)
SIGNATURE_KEY = "serving_default"


@converter(Format.KERAS, Format.TFLITE, backend="tensorflow", tolerance=TOLERANCE,
           options={"quantize": "none", "calibration_data": None})
def keras_to_tflite(src: Path, dest: Path, quantize: str = "none", calibration_data: str | None = None,
                    trust_unsafe_code: bool = False) -> dict[str, Any]:
    from ._tf_function import own_saved_model, shared_saved_model
    from ._tf_lowering import lowerings

    mode, model, sig, calibration = prepare(src, quantize, calibration_data, trust_unsafe_code)
    int8 = any(str(getattr(w, "dtype", "")) == "int8" for w in model.weights)  # Keras' model.quantize("int8")
    with lowerings(int8_products_in_float=int8):  # a causal attention mask TFLite can run at any length, ...
        # the same SavedModel the saved_model edge writes (one export per process and source), but for products of
        # int8 tensors, which the other edges keep and TFLite cannot lower (see _tf_lowering)
        saved = own_saved_model(model, SIGNATURE_KEY) if int8 else \
            shared_saved_model(src, SIGNATURE_KEY, trust_unsafe_code)
    # dimensions the Keras model leaves open stay open (shape_signature -1); the engine resizes per call
    per_tensor = unrolled_recurrence(model)  # here only Keras' unroll=True converts (see unrolled_recurrence)
    blob = convert_saved_model(saved, mode, calibration, lambda exc: _refusal(exc, model, sig, mode), per_tensor)
    dest.write_bytes(blob)
    return info(mode, calibration, calibration_data, per_tensor)


def unrolled_recurrence(model: Any) -> bool:
    """Whether the model has recurrent layers, which the routes that convert them at a fixed length unroll (Keras'
    own unroll=True on this route, modelkit's loop on the 'unrolled' one): such an int8 model gets its dense
    weights quantized per tensor. Every step is its own FULLY_CONNECTED ops on the shared weights, and each step's
    bias is requantized with that step's input scale (int32, one copy per step); with per-channel weights each copy
    also carries a scale and a zero point per output channel (12 bytes each), which made an unrolled GRU
    autoencoder's int8 file 1.8x its float32 one. Per tensor (TFLite's default for FULLY_CONNECTED until TF 2.15),
    a digits LSTM + Bidirectional(GRU) classifier over 8 steps: 302 KB -> 227 KB at the same accuracy (0.899;
    float32 419 KB). The accuracy gate judges the result as always."""
    from ._unroll import recurrent_layers

    return bool(recurrent_layers(model))


def prepare(src: Path, quantize: str, calibration_data: str | None,
            trust_unsafe_code: bool) -> tuple[str, Any, Any, dict[str, Any] | None]:
    """What every keras -> tflite route needs first: the quantization mode, the Keras model (loaded once per
    process for all TF-based hops), its signature, and the int8 calibration samples."""
    from .. import manifest as _manifest
    from ..keras_io.files import keras_signature
    from . import quantize as q
    from ._tf_function import shared_model

    mode = q.check_mode(quantize, Format.TFLITE)
    model = shared_model(src, trust_unsafe_code)
    sig = keras_signature(model)
    calibration = (q.calibration_inputs(_manifest.read(src), sig, calibration_data) if mode == "int8" else None)
    return mode, model, sig, calibration


def convert_saved_model(saved: Path, mode: str, calibration: dict[str, Any] | None,
                        refusal: Callable[[BaseException], Exception], dense_per_tensor: bool = False) -> bytes:
    """TFLite flatbuffer bytes of the `serving_default` signature of the SavedModel at `saved`, builtin ops
    only; a converter failure is raised as refusal(exc) (a typed error). dense_per_tensor: int8 weights of
    FULLY_CONNECTED ops get one scale each instead of one per output channel (see unrolled_recurrence)."""
    import tensorflow as tf
    from tensorflow.lite.python.convert_phase import ConverterError  # not exported under tf.lite

    from .float_islands import said_kept

    conv = tf.lite.TFLiteConverter.from_saved_model(str(saved), signature_keys=[SIGNATURE_KEY])
    _configure(conv, tf, mode, calibration, dense_per_tensor)
    try:
        with engine_chatter_swallowed():  # MLIR prints every diagnostic; the refusal carries them
            blob = conv.convert()
            kept, blob = _float_islands(conv, blob) if mode == "int8" else ([], blob)
    except (ConverterError, RuntimeError, ValueError, tf.errors.OpError) as exc:
        raise refusal(exc) from exc
    said_kept(kept)
    return blob


def _float_islands(conv: Any, blob: bytes) -> tuple[list[str], bytes]:
    """The ops converters.float_islands keeps in float32 and the int8 model made again with them float, when
    there are any (a Normalization over raw features); else ([], blob). The converter's own quantization is
    calibrate, then mlir_quantize: the same two steps, taken apart to pass `denylisted_nodes` (as
    tf.lite.experimental.QuantizationDebugger does), which leaves those ops float between a DEQUANTIZE and a
    QUANTIZE."""
    from tensorflow.lite.python.convert import mlir_quantize

    from .float_islands import tflite_kept_float, tflite_may_keep

    if not tflite_may_keep(blob):  # no elementwise op with a per-feature constant: nothing to look at
        return [], blob
    conv._experimental_calibrate_only = True  # noqa: SLF001 - the converter's calibrated, unquantized model
    calibrated = conv.convert()
    kept = tflite_kept_float(calibrated)
    dense = conv._experimental_disable_per_channel_quantization_for_dense_layers  # noqa: SLF001
    return ((kept, mlir_quantize(calibrated, denylisted_nodes=kept, disable_per_channel_for_dense_layers=dense))
            if kept else ([], blob))


def info(mode: str, calibration: dict[str, Any] | None, calibration_data: str | None,
         dense_per_tensor: bool = False) -> dict[str, Any]:
    """The edge's info for the manifest: quantization, versions, calibration samples (and extra
    `"int8_dense_weights": "per-tensor"` for an int8 model whose dense weights are, see unrolled_recurrence)."""
    import keras
    import tensorflow as tf

    versions = {"tensorflow": tf.__version__, "keras": keras.__version__}
    try:
        from importlib.metadata import version

        versions["ai-edge-litert"] = version("ai-edge-litert")
    except ImportError:  # pragma: no cover - importlib.metadata is stdlib
        pass
    out: dict[str, Any] = {"quantization": mode, "versions": versions}
    if calibration is not None:
        out["calibration"] = {"samples": len(next(iter(calibration.values()))),
                              "data": calibration_data or "training split (source manifest)"}
    if dense_per_tensor and mode == "int8":
        out["extra"] = {"int8_dense_weights": "per-tensor"}  # the manifest's extra
    return out


def _configure(conv: Any, tf: Any, mode: str, calibration: dict[str, Any] | None, dense_per_tensor: bool) -> None:
    """Set the converter up for one quantization mode; only builtin TFLite ops in every mode (dense_per_tensor:
    see convert_saved_model)."""
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if mode == "none":
        return
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "fp16":
        conv.target_spec.supported_types = [tf.float16]
    elif mode == "int8":
        from ..spec import tf_input_names
        from .quantize import iter_samples

        # one sample per step, keyed by the signature's input names (the Keras names, as TF keeps them)
        tf_names = tf_input_names(calibration or {})
        conv.representative_dataset = lambda: ({tf_names[k]: v for k, v in row.items()}
                                               for row in iter_samples(calibration or {}, batch=1))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.float32  # float interface kept on purpose (see module docstring)
        conv.inference_output_type = tf.float32
        conv._experimental_disable_per_channel_quantization_for_dense_layers = dense_per_tensor  # noqa: SLF001
    # dynamic-int8: Optimize.DEFAULT without a representative dataset is dynamic-range quantization


# Keras' recurrent layers: under TensorFlow their loop over time becomes TensorList ops, which the TFLite
# converter lowers to builtins only when every shape is static (fixed batch and length)
_RNN_CLASSES = ("LSTM", "GRU", "SimpleRNN", "RNN", "Bidirectional", "ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D")
_TENSOR_LIST = ("TensorListReserve", "Lowering tensor list ops")


def _refusal(exc: BaseException, model: Any, sig: Any, mode: str) -> Exception:
    """The converter's failure as a typed error: a recurrent layer is an UnsupportedConversionError naming
    it; anything else a ConversionError with the converter's own reason (and the dynamic dims, if any)."""
    from ..errors import ConversionError, UnsupportedConversionError

    text = str(exc)
    if any(t in text for t in _TENSOR_LIST):
        rnns = [f"'{layer.name}' ({type(layer).__name__})" for layer in _layers(model)
                if type(layer).__name__ in _RNN_CLASSES]
        if rnns:
            return UnsupportedConversionError(
                f"layer {rnns[0]} cannot be converted to tflite by the converter route: Keras' recurrent loop "
                "lowers to TensorList ops, which TFLite's builtin ops express only for a fixed batch and length, "
                "and modelkit keeps the batch dynamic; formats that convert it: onnx, saved_model (at any "
                "length), tflite by the 'loop' route (any length) or the 'unrolled' route (a fixed length)")
    flex = _flex_refusal(text, model)
    if flex is not None:
        return flex
    dynamic = dynamic_dims_text(sig)
    hint = f" (the model has dynamic dimensions: {dynamic}; onnx and saved_model keep them dynamic)" if dynamic else ""
    return ConversionError(f"the TFLite converter failed ({mode}): {_reason(text) or type(exc).__name__}{hint}")


def _flex_refusal(text: str, model: Any) -> Exception | None:
    """A TensorFlow op with no TFLite builtin (the converter asks for Flex ops, or says the op is none) as an
    UnsupportedConversionError naming the Keras layer whose name scope the converter's error locates it in (else
    the model: an op called outside any layer), or None."""
    import re

    from ..errors import UnsupportedConversionError

    ops = re.search(r"TF Select ops: ([\w, ]+)", text)
    # some ops the converter cannot even hand to Flex ("'tf.MatrixSolve' op is neither a custom op nor a flex op")
    names = ([n.strip() for n in ops.group(1).split(",") if n.strip()] if ops else
             list(dict.fromkeys(re.findall(r"'tf\.(\w+)' op is neither a custom op nor a flex op", text))))
    if not names:
        return None
    no_builtin = (f"op(s) {', '.join(names)}, which are no TFLite builtin ops (they need Flex ops, which "
                  "ai-edge-litert cannot run); the format that keeps every TensorFlow op: saved_model")
    paths = [path for op, path in re.findall(r'fused\["(\w+):", "([^"@]+)@', text) if op in names]
    by_name = {layer.name: layer for layer in _layers(model)}
    for path in paths:
        for part in reversed(path.split("/")[:-1]):  # innermost scope first; TF adds "_1" to scope names
            layer = by_name.get(part) or by_name.get(re.sub(r"_\d+$", "", part))
            if layer is not None:
                return UnsupportedConversionError(f"layer '{layer.name}' ({type(layer).__name__}) cannot be converted "
                                                  f"to tflite: it runs TensorFlow {no_builtin}")
    # keras.ops called on the model's tensors outside any layer (a functional model's `ops.arcsin(x)`)
    return UnsupportedConversionError(f"the model cannot be converted to tflite: it runs TensorFlow {no_builtin}")


def dynamic_dims_text(sig: Any) -> str:
    """"'tokens' dim 1, 'image' dims 1, 2" for the non-batch dimensions a signature leaves open."""
    parts = []
    for s in sig.inputs:
        axes = [str(i) for i, d in enumerate(s.shape) if i > 0 and d is None]
        if axes:
            parts.append(f"'{s.name}' dim{'s' if len(axes) > 1 else ''} {', '.join(axes)}")
    return ", ".join(parts)


def _layers(model: Any) -> list[Any]:
    flatten = getattr(model, "_flatten_layers", None)
    return list(flatten(include_self=False, recursive=True)) if flatten else list(getattr(model, "layers", []))


def _reason(text: str) -> str:
    """The converter's reason without MLIR locations: "'tf.X' op ..." or "TF Select ops: X", else line 1."""
    import re

    found = re.search(r"error: ('tf\.\w+' op [^\n]*)", text) or re.search(r"(TF Select ops: [^\n]*)", text)
    if found:
        return found.group(1).strip()
    text = text.strip()
    return text.splitlines()[0] if text else ""
