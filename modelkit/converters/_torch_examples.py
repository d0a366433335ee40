"""The example inputs a torch trace runs at (modelkit.converters._torch_dims): which sizes its open dimensions take
(8, 10, ...; 64, 96, ... for a model that runs only at multiples of a stride; one size for every open dimension, 8
or 64, for a model whose open dimensions must agree: a graph network's node features (N, F) and adjacency (N, N),
nc185; chosen once per loaded model by fit_examples), the shapes and seeded tensors at those or other sizes, and the
hint for a model that runs at none of them.
"""
from __future__ import annotations

import contextvars
from typing import Any, Mapping

from ..spec import Signature

ALIGNED_EXAMPLE = 32  # a model that runs only at multiples of a stride is traced at 64, 96, ... (fit_examples)
_aligned = contextvars.ContextVar("modelkit_aligned_examples", default=False)
_tied = contextvars.ContextVar("modelkit_tied_examples", default=False)  # its open dims take one size together
_unfit = contextvars.ContextVar("modelkit_unfit_examples", default=False)  # runs at no tier of examples


def example_size(axis: int) -> int:
    """The size an open non-batch dimension is traced at: 8, 10, 12 ... (distinct per axis, so two open
    dims of one input cannot be mistaken for one; none of them a verification size); 64, 96, ... for a
    model fit_examples found running only at multiples of a stride: not 32, where a network that downsamples 32
    times (MobileNetV2) ends in a 1-high map, and the program then guards that height, refusing larger sizes (nc76)."""
    axis = 1 if _tied.get() else axis
    return ALIGNED_EXAMPLE * (axis + 1) if _aligned.get() else 8 + 2 * (axis - 1)


def fit_examples(module: Any, sig: Signature) -> None:
    """Choose the example sizes of the model just loaded: a model that takes only multiples of a stride (a U-Net's
    poolings and skip concatenations, nc73: 10 pools to 5, then 2, which comes back as 4) cannot be traced at 8,
    10, ...; when it runs at 64, 96, ... instead, those are its examples. A model whose open dimensions must agree
    (a graph's N nodes in (N, F) features and an (N, N) adjacency) runs at neither, and is traced with every open
    dimension at 8 (or 64): torch.export then ties them into one size (Dim.AUTO). None: the defaults, and the
    export's own error says why."""
    import torch

    _aligned.set(False)
    _tied.set(False)
    _unfit.set(False)
    if not open_axes(sig):
        return
    for tied, aligned in ((False, False), (False, True), (True, False), (True, True)):
        if tied and len({axis for _, axis in open_axes(sig)}) < 2:
            break  # one open axis: its sizes were tied already
        _aligned.set(aligned)
        _tied.set(tied)
        try:
            with torch.no_grad():
                module(*inputs_at(sig, 2))
            return
        except Exception:  # noqa: BLE001 - any error of the user's model at these sizes: try the next
            continue
    _aligned.set(False)
    _tied.set(False)
    _unfit.set(True)


def unfit_hint(sig: Signature) -> str:
    """For a trace's error: where fit_examples found the Keras model running at neither tier of example sizes (nc118:
    a MelSpectrogram's reflect padding needs over 128 samples), that, and the --input-spec that converts it."""
    from ..keras_io.inputs import open_specs_text

    if not _unfit.get():
        return ""
    return (f"; the model runs neither at the sizes its open dimensions are traced at ({example_size(1)}, ...) nor "
            f"at {ALIGNED_EXAMPLE * 2}, ...: fix them at a size it runs at, e.g. {open_specs_text(sig, 1024)}")


def open_axes(sig: Signature) -> list[tuple[str, int]]:
    """(input name, axis) of every open non-batch dimension."""
    return [(s.name, i) for s in sig.inputs for i, d in enumerate(s.shape) if i > 0 and d is None]


def shape_at(spec: Any, batch: int, size: int | Mapping[int, int] | None = None) -> tuple[int, ...]:
    """A concrete shape: an open dim 0 is `batch`, other open dims `size` (one for all, or per axis; default
    example_size(axis))."""
    def at(axis: int) -> int:
        return (size.get(axis) if isinstance(size, Mapping) else size) or example_size(axis)

    return tuple(d if d is not None else batch if i == 0 else at(i) for i, d in enumerate(spec.shape))


def inputs_at(sig: Signature, batch: int, size: int | Mapping[int, int] | None = None,
              seed: int = 0) -> tuple[Any, ...]:
    """Seeded tensors at shape_at(): uniform [0, 1) floats, zero ints (a valid index for any Embedding)."""
    import numpy as np
    import torch

    rng = np.random.default_rng(seed)
    out = []
    for spec in sig.inputs:
        shape = shape_at(spec, batch, size)
        if np.dtype(spec.dtype).kind == "f":
            arr = rng.random(shape, dtype=np.float64).astype(spec.dtype)
        else:
            arr = np.zeros(shape, dtype=spec.dtype)
        out.append(torch.from_numpy(arr))
    return tuple(out)
