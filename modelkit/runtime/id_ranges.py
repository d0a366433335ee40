"""Token / category id bounds checked before any engine runs.

An id past an Embedding's input_dim is undefined per engine: onnxruntime, LiteRT and torch raise their own
errors, OpenVINO and TVM read out of bounds and return garbage without a word. Integer inputs whose manifest
records a hard id range (extra.verification_inputs, written by the converter: Embedding input_dim,
CategoryEncoding num_tokens), or whose .keras model has them in its layers (read by the Keras engine), are checked
against it by Model.predict, for every engine, with an InputError naming the input, the range and the layer.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ..errors import InputError
from ..keras_io.ranges import Range, hard_id_ranges
from ..spec import Signature

IdRanges = dict[str, tuple[int, int, str]]


def id_ranges(m: Any, sig: Signature) -> IdRanges:
    """The hard id ranges manifest `m` records for integer inputs (low/high read from an Embedding or
    CategoryEncoding by the converter). Empty without a manifest."""
    stored = (((getattr(m, "extra", None) or {}).get("verification_inputs") or {}).get("ranges")) or {}
    return as_bounds({k: Range.from_dict(v) for k, v in stored.items() if isinstance(v, dict)}, sig)


def as_bounds(ranges: Mapping[str, Range], sig: Signature) -> IdRanges:
    """{input: (low, high, why)} of the ranges that bound integer ids exactly (keras_io.ranges.hard_id_ranges)."""
    return {k: (r.low, r.high, r.why or "the model's id range") for k, r in hard_id_ranges(ranges, sig).items()}


def check_ids(ranges: IdRanges, inputs: dict[str, np.ndarray]) -> None:
    """Raise InputError when an input bound to the signature holds an id outside its recorded range."""
    for name, (low, high, why) in ranges.items():
        arr = inputs.get(name)
        if arr is not None and arr.size and (arr.min() < low or arr.max() >= high):
            raise InputError(f"input '{name}': ids must be in [{low}, {high}) ({why}); got values from "
                             f"{arr.min()} to {arr.max()}")
