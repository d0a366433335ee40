"""Keras' torch `slice_update` at int start indices as slice_scatter, for an export ExecuTorch lowers.

Keras (3.15) writes the slice in place into a clone (`outputs = torch.clone(inputs); outputs[slices] = updates`).
The XNNPACK partitioner took the clone into a partition whose output was then its own input, and refused the
program: "Output node 'aten_linear_default' is already in the inputs. This is likely due to pass through arguments,
which are not supported in XNNPACK Delegate" (nc159: a custom layer zeroing its first token's features with
`ops.slice_update`). Here the update is placed by one slice_scatter per axis it does not span, with no clone and no
in-place write: the same values. Start indices held in tensors go to Keras' own code.
"""
from __future__ import annotations

from typing import Any


def scattered_slice_update(keras_own: Any) -> Any:
    """`keras_own` (keras.src.backend.torch.core.slice_update) as nested slice_scatter at int start indices."""
    def slice_update(inputs: Any, start_indices: Any, updates: Any) -> Any:
        import torch
        from keras.src.backend.torch.core import convert_to_tensor

        starts = list(start_indices) if isinstance(start_indices, (list, tuple)) else []
        inputs, updates = convert_to_tensor(inputs), convert_to_tensor(updates)
        if (not starts or not all(isinstance(s, int) and not isinstance(s, bool) for s in starts)
                or len(starts) != inputs.ndim or updates.ndim != inputs.ndim):
            return keras_own(inputs, start_indices, updates)
        updates = updates.to(inputs.dtype)

        def place(x: Any, d: int) -> Any:
            if d == len(starts):
                return updates
            n, size = x.shape[d], updates.shape[d]
            if starts[d] == 0 and isinstance(n, int) and isinstance(size, int) and n == size:
                return place(x, d + 1)  # the update spans this axis
            end = starts[d] + size
            inner = place(x[(slice(None),) * d + (slice(starts[d], end),)], d + 1)
            return torch.slice_scatter(x, inner, dim=d, start=starts[d], end=end)

        return place(inputs, 0)
    return slice_update
