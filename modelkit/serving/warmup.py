"""The inputs a model is warmed up with before it serves (`modelkit serve`, TF Serving's warm-up records).

Ones, not zeros (0 is Keras' padding: a row of padding only is no warm-up), of `rows` rows. An open dimension
other than the batch takes the smallest size its manifest's parity check ran at, a size the artifact is known to
take: at 1, the first guess before, a model whose valid convolution needs 3 steps, or a U-Net that takes only
multiples of 4, failed its warm-up and so never served ("version 1 failed to load: ShapeError"). Without a
manifest, sizes are tried in turn (WARM_SIZES) until one runs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..spec import Signature

WARM_SIZES = (1, 13, 32, 64, 96)  # without a recorded size: a short one, odd, and multiples of 32 for U-Nets


def verified_sizes(path: Path) -> dict[tuple[str, int], int]:
    """(input, axis) -> the smallest size parity ran at, from the artifact's manifest (empty without one)."""
    from .. import manifest as _manifest
    from ..errors import ModelkitError

    try:
        m = _manifest.read(path)
    except ModelkitError:  # a corrupt manifest is the engine's business
        return {}
    dims = ((m.extra or {}).get("dynamic_dims") or {}) if m is not None else {}
    out = {}
    for name, axes in dims.items():
        for axis, entry in (axes or {}).items():
            sizes = [s for s in (entry or {}).get("sizes") or [] if isinstance(s, int) and s > 0]
            if axis != "0" and sizes:
                out[(name, int(axis))] = min(sizes)
    return out


def feeds(path: Path, sig: Signature, rows: int) -> Iterator[dict[str, np.ndarray]]:
    """Warm-up inputs to try in turn: the manifest's sizes first, then each of WARM_SIZES for every open dim."""
    known = verified_sizes(path)
    opened = any(d is None for s in sig.inputs for d in s.shape[1:])
    plans = ([(known, 1)] if known else []) + [({}, size) for size in (WARM_SIZES if opened else (1,))]
    for sizes, default in plans:
        yield {s.name: np.ones(tuple(d if d is not None else rows if i == 0 else sizes.get((s.name, i), default)
                                     for i, d in enumerate(s.shape)), s.dtype) for s in sig.inputs}


def warm(model: Any, rows: int) -> None:
    """Run `model` once on `rows` rows of the first feeds() it takes; the first error where it takes none."""
    first: Exception | None = None
    for feed in feeds(model.path, model.signature, rows):
        try:
            model.predict(feed)
            return
        except Exception as exc:  # noqa: BLE001 - any engine's error at these sizes: try the next
            first = first or exc
    assert first is not None  # feeds() yields at least one feed
    raise first

