"""A size that torch.export keeps symbolic, made a tensor without fixing it (nc163).

A layer that uses a size as a value (`ops.full((batch,), ops.shape(x)[1])`: each row's length for a CTC decode;
`ops.ones((b,)) * t`) reaches Keras' torch `convert_to_tensor`, which calls torch.as_tensor on the SymInt; torch.export
(2.13) then fixes the size at the traced one ("layer 'decoded' (GreedyCTC) turns it into the traced size 10").
torch.scalar_tensor keeps it symbolic. While exporting, torch.as_tensor of a SymInt, SymFloat or SymBool (or of a
flat list or tuple holding them) is built so; everything else goes to torch's own.
"""
from __future__ import annotations

import contextlib
import functools
from typing import Any, Iterator


@contextlib.contextmanager
def symbolic_as_tensor() -> Iterator[None]:
    """torch.as_tensor that keeps symbolic sizes symbolic, inside the block."""
    from unittest import mock

    import torch

    own = torch.as_tensor
    symbolic = (torch.SymInt, torch.SymFloat, torch.SymBool)

    def scalar(value: Any, dtype: Any, device: Any) -> Any:
        if dtype is None:
            dtype = torch.int64 if isinstance(value, (int, torch.SymInt)) and not isinstance(value, bool) \
                else torch.bool if isinstance(value, (bool, torch.SymBool)) else torch.get_default_dtype()
        return torch.scalar_tensor(value, dtype=dtype, device=device)

    def as_tensor(data: Any, dtype: Any = None, device: Any = None) -> Any:
        if isinstance(data, symbolic):
            return scalar(data, dtype, device)
        if (isinstance(data, (list, tuple)) and data and any(isinstance(v, symbolic) for v in data)
                and all(isinstance(v, (*symbolic, int, float, bool)) for v in data)):
            values = [scalar(v, dtype, device) for v in data]
            common = functools.reduce(torch.promote_types, (v.dtype for v in values))
            return torch.stack([v.to(common) for v in values])
        return own(data, dtype=dtype, device=device)

    with mock.patch.object(torch, "as_tensor", as_tensor):
        yield
