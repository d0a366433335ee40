"""Keras' torch `map` over a tensor as torch.vmap, for torch.export.

Keras (3.15) runs `keras.ops.map(f, xs)` under torch as a Python loop over xs's first axis (its `scan`), so mapping
over the batch fixed it to the traced size (nc161: a layer scaling each row by its own maximum, `ops.map(lambda r:
r / max(|r|), x)`): pt2, ExecuTorch and torch.onnx (then TVM and OpenVINO) refused it. While an export runs, a map
over one tensor is torch.vmap of the same function: the same values for a function of one row at a time, which is
what map computes. A function vmap cannot take (a data-dependent size, an in-place write) goes to Keras' loop, and
the export's refusal names the layer as before. TorchScript's trace keeps Keras' loop and refuses a map over the
batch, naming the layer (under the trace, vmap lost that name).
"""
from __future__ import annotations

from typing import Any


def vmapped_map(keras_own: Any) -> Any:
    """`keras_own` (keras.src.backend.torch.core.map) as torch.vmap when xs is one tensor."""
    def map(f: Any, xs: Any) -> Any:  # noqa: A001 - Keras' name
        import torch

        if not isinstance(xs, torch.Tensor) or xs.ndim == 0:
            return keras_own(f, xs)
        try:
            return torch.vmap(f)(xs)
        except Exception:  # noqa: BLE001 - not vmappable: Keras' own loop, and the export's own refusal
            return keras_own(f, xs)
    return map
