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
    from ._tf_loop import looped_rnn
    from .keras_tflite_unrolled import convert_recurrent, traced_saved_model

    def trace(model: Any, sig: Any, folder: Path) -> tuple[Path, dict[str, Any]]:
        with looped_rnn():
            return traced_saved_model(model, sig, folder), {}

    return convert_recurrent(src, dest, quantize, calibration_data, trust_unsafe_code, ROUTE, trace)
