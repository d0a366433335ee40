"""Route 'unrolled' of keras -> tflite: recurrent layers unrolled over a fixed sequence length.

Keras' recurrent loop under TensorFlow is a while loop over TensorLists, which TFLite's builtin ops
express only at a fixed batch (the first route, keras_tflite, refuses it). This route traces the same
model (the same weights: nothing is rebuilt) with modelkit's unrolled loop (modelkit.converters._unroll):
per time step the cell's own ops, masks as SELECT_V2, so LSTM, GRU, SimpleRNN, stacked and Bidirectional
layers, masked by Embedding(mask_zero=True) or Masking, become builtin ops with the batch still dynamic.
Unrolling needs the number of steps: the model's inputs must fix the sequence length (`keras.Input((12,
6))`, or `--input-spec frames:?,12,6` for a model that leaves it open); otherwise the route refuses,
naming the layer and the input spec to give. The artifact takes sequences of exactly that length (its
signature says so) and is verified against the original Keras model (its own loop) at that length;
the manifest records the route, the layers unrolled and the length (extra.route.unrolled).

int8: dense weights are quantized per tensor, as on the converter route for Keras' unroll=True (see
keras_tflite.unrolled_recurrence: per-channel scales were copied with every step's bias).
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from ..formats import Format
from .keras_tflite import TOLERANCE
from .registry import converter

ROUTE = "unrolled"


@converter(Format.KERAS, Format.TFLITE, backend="tensorflow", tolerance=TOLERANCE,
           options={"quantize": "none", "calibration_data": None})
def keras_to_tflite_unrolled(src: Path, dest: Path, quantize: str = "none", calibration_data: str | None = None,
                             trust_unsafe_code: bool = False) -> dict[str, Any]:
    def trace(model: Any, sig: Any, folder: Path) -> tuple[Path, dict[str, Any]]:
        saved, steps = _saved_model(model, sig, folder)
        lengths = {s.name: s.shape[1] for s in sig.inputs if len(s.shape) > 1}
        return saved, {"steps": sorted(set(steps)), "sequence_lengths": lengths}

    return convert_recurrent(src, dest, quantize, calibration_data, trust_unsafe_code, ROUTE, trace,
                             dense_per_tensor=True)


def convert_recurrent(src: Path, dest: Path, quantize: str, calibration_data: str | None, trust_unsafe_code: bool,
                      route: str, trace: Callable[[Any, Any, Path], tuple[Path, dict[str, Any]]],
                      dense_per_tensor: bool = False) -> dict[str, Any]:
    """What the recurrent routes of keras -> tflite share: the original model (the loop is swapped while
    tracing only), a refusal when it has no recurrent layer, `trace(model, sig, folder)` -> (SavedModel,
    the route's facts for the manifest), TFLite conversion, the edge's info with extra.route[route]
    (dense_per_tensor: int8 dense weights quantized per tensor, see keras_tflite.unrolled_recurrence)."""
    from ..errors import RouteNotApplicableError
    from ._unroll import recurrent_layers
    from .keras_tflite import _refusal, convert_saved_model, info, prepare

    mode, model, sig, calibration = prepare(src, quantize, calibration_data, trust_unsafe_code)
    layers = recurrent_layers(model)
    if not layers:
        raise RouteNotApplicableError(f"{Path(src).name}: the '{route}' route is for recurrent layers, and the "
                                         "model has none")
    folder = Path(tempfile.mkdtemp(prefix=f"modelkit-{route}-"))
    try:
        saved, facts = trace(model, sig, folder)
        # an op with no builtin (a layer's BitwiseAnd) is refused naming its layer, as on the converter route
        blob = convert_saved_model(saved, mode, calibration, lambda exc: _refusal(exc, model, sig, mode),
                                   dense_per_tensor)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    dest.write_bytes(blob)
    out = info(mode, calibration, calibration_data, dense_per_tensor)
    out["route"] = {route: {"layers": [layer.name for layer in layers], **facts}}
    return out


def _dynamic(sig: Any, layer: str, why: str) -> Exception:
    """The typed refusal for an open sequence length, with the --input-spec that fixes it."""
    from ..errors import UnsupportedConversionError

    hint = " ".join(f"--input-spec {s.name}:{','.join(_dim(d, i) for i, d in enumerate(s.shape))}:{s.dtype}"
                    for s in sig.inputs if None in s.shape[1:])  # the inputs of fixed shape keep theirs
    return UnsupportedConversionError(
        f"layer {layer} cannot be converted to tflite by the '{ROUTE}' route: {why}, and unrolling needs a "
        f"fixed number of steps; give the length with {hint} (<length>: the sequence length the artifact will "
        "take; the batch stays dynamic); formats that convert it at any length: onnx, saved_model, tflite by "
        "the 'loop' route")


def _dim(d: int | None, axis: int) -> str:
    if d is not None:
        return str(d)
    return "?" if axis == 0 else "<length>"


def _saved_model(model: Any, sig: Any, folder: Path) -> tuple[Path, list[int]]:
    """A SavedModel of `model` traced with the unrolled loop (serving_default, Keras names), and the step
    counts unrolled."""
    from ._unroll import unrolled_rnn

    def check() -> None:  # right after the serving trace: later traces (SavedModel's own) may be open
        if seen.dynamic is not None:  # an open time axis: refused, naming the layer
            raise _dynamic(sig, seen.dynamic.layer, seen.dynamic.reason)

    with unrolled_rnn(fused=False) as seen:
        saved = traced_saved_model(model, sig, folder, check)
    return saved, seen.steps


def traced_saved_model(model: Any, sig: Any, folder: Path, traced: Callable[[], None] = lambda: None) -> Path:
    """A SavedModel of `model` traced anew under the caller's patches (serving_default, Keras names), with
    TFLite's lowerings (modelkit.converters._tf_lowering), at folder/saved_model; `traced` runs right after
    the serving function is traced (it may refuse)."""
    from ._tf_function import serving_function, write_saved_model
    from ._tf_lowering import lowerings
    from .keras_tflite import SIGNATURE_KEY

    with lowerings():
        fn, specs = serving_function(model, sig, as_dict=True)  # a new trace, not the shared one
        fn.get_concrete_function(*specs)
        traced()
        write_saved_model(model, SIGNATURE_KEY, fn, specs, folder / "saved_model")
    return folder / "saved_model"
