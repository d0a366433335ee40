"""Token / category id bounds checked before any engine runs.

An id past an Embedding's input_dim is undefined per engine: onnxruntime, LiteRT and torch raise their own
errors, OpenVINO and TVM read out of bounds and return garbage without a word. Integer inputs whose manifest
records a hard id range (extra.verification_inputs, written by the converter: Embedding input_dim,
CategoryEncoding num_tokens) are checked against it by Model.predict, for every engine, with an InputError
naming the input, the range and the layer.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InputError

IdRanges = dict[str, tuple[int, int, str]]


def id_ranges(m: Any, sig: Any) -> IdRanges:
    """Integer inputs with a hard id range in manifest `m` (low/high read from an Embedding or CategoryEncoding;
    a vocabulary of `values` maps unknown ids to a bucket, so it is not a bound). Empty without a manifest."""
    ranges = (((getattr(m, "extra", None) or {}).get("verification_inputs") or {}).get("ranges")) or {}
    out: IdRanges = {}
    for spec in sig.inputs:
        r = ranges.get(spec.name) or {}
        if np.dtype(spec.dtype).kind in "iu" and r.get("values") is None and isinstance(r.get("low"), int) \
                and isinstance(r.get("high"), int):
            out[spec.name] = (r["low"], r["high"], r.get("why") or "the model's id range")
    return out


def check_ids(ranges: IdRanges, inputs: dict[str, np.ndarray]) -> None:
    """Raise InputError when an input bound to the signature holds an id outside its recorded range."""
    for name, (low, high, why) in ranges.items():
        arr = inputs.get(name)
        if arr is not None and arr.size and (arr.min() < low or arr.max() >= high):
            raise InputError(f"input '{name}': ids must be in [{low}, {high}) ({why}); got values from "
                             f"{arr.min()} to {arr.max()}")
