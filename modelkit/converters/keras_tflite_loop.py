"""Route 'loop' of keras -> tflite: recurrent layers as one builtin WHILE loop, for any sequence length.

The first route (keras_tflite) refuses Keras' recurrent loop (TensorList ops, fixed shapes only); the
second ('unrolled') needs a fixed length. This one traces the same model (the same weights) with
modelkit's while loop (modelkit.converters._tf_loop): the cell's own ops in the body, outputs grown by
concatenation, masks as SELECT_V2, so LSTM, GRU, SimpleRNN, stacked, Bidirectional and masked layers
become builtin ops with the batch and the length left open (shape_signature -1; the litert engine resizes
per call). It runs slower per step than an unrolled artifact (one WHILE iteration per step), which is why
'unrolled' comes first for a fixed length. Verified against Keras' own loop at several lengths like any
hop; the manifest records the route and the layers looped (extra.route.loop).
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..formats import Format
from .keras_tflite import TOLERANCE
from .registry import converter

ROUTE = "loop"


@converter(Format.KERAS, Format.TFLITE, backend="tensorflow", tolerance=TOLERANCE,
           options={"quantize": "none", "calibration_data": None})
def keras_to_tflite_loop(src: Path, dest: Path, quantize: str = "none", calibration_data: str | None = None,
                         trust_unsafe_code: bool = False) -> dict[str, Any]:
    from ..errors import UnsupportedConversionError
    from ._tf_loop import looped_rnn
    from ._unroll import recurrent_layers
    from .keras_tflite import _refusal, convert_saved_model, info, prepare
    from .keras_tflite_unrolled import traced_saved_model

    mode, model, sig, calibration = prepare(src, quantize, calibration_data, trust_unsafe_code)
    layers = recurrent_layers(model)
    if not layers:
        raise UnsupportedConversionError(f"{Path(src).name}: the '{ROUTE}' route loops recurrent layers, and "
                                         "the model has none")
    folder = Path(tempfile.mkdtemp(prefix="modelkit-loop-"))
    try:
        with looped_rnn():
            saved = traced_saved_model(model, sig, folder)
        blob = convert_saved_model(saved, mode, calibration, lambda exc: _refusal(exc, model, sig, mode))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    dest.write_bytes(blob)
    out = info(mode, calibration, calibration_data)
    out["route"] = {"loop": {"layers": [layer.name for layer in layers]}}
    return out
