"""torch.quantile (Keras' torch `quantile` and `median` call it) as a sort by topk and gathers, for ExecuTorch.

torch.export keeps aten.quantile as one op, which ExecuTorch 1.5.1 has no kernel for: a model with a median over
time failed to load ("error 0x14: operator missing"; nc79). `topk_quantile` computes torch's own definition from
the sorted values (every element by topk, smallest first: a Core ATen op with a portable kernel): the values at
the lower and higher index of (n - 1) * q, and their linear interpolation, midpoint or nearest (ties to even, as
torch rounds); NaN where a reduced slice holds one; q's dims first. Patched in only around ExecuTorch's export
(modelkit.converters._torch_export_ops.executorch_ops).
"""
from __future__ import annotations

from typing import Any


def topk_quantile(own: Any) -> Any:
    """torch.quantile(input, q, dim, keepdim, interpolation) over one given dim; other calls go to `own`."""
    import torch

    def quantile(x: Any, q: Any, dim: int | None = None, keepdim: bool = False, *, interpolation: str = "linear",
                 out: Any = None) -> Any:
        if dim is None or out is not None or not x.is_floating_point():
            return own(x, q, dim=dim, keepdim=keepdim, interpolation=interpolation, out=out)
        q = torch.as_tensor(q, dtype=x.dtype, device=x.device)
        x = torch.movedim(x, dim, -1)
        n = x.shape[-1]
        ordered = torch.topk(x, n, dim=-1, largest=False, sorted=True).values
        pos = (n - 1) * q.reshape(-1)
        lower, higher = torch.floor(pos), torch.ceil(pos)

        def at(index: Any) -> Any:  # (..., len(q))
            return torch.index_select(ordered, -1, index.to(torch.int64).clamp(0, n - 1))

        if interpolation == "lower":
            got = at(lower)
        elif interpolation == "higher":
            got = at(higher)
        elif interpolation == "nearest":
            got = at(torch.round(pos))
        elif interpolation == "midpoint":
            got = (at(lower) + at(higher)) / 2
        else:
            got = torch.lerp(at(lower), at(higher), pos - lower)
        got = torch.where(torch.isnan(x).any(dim=-1, keepdim=True), torch.nan, got)
        if keepdim:
            got = torch.movedim(got.unsqueeze(-2), -2, dim if dim >= 0 else dim + x.dim())
        got = torch.movedim(got, -1, 0)  # q's dim first, as torch.quantile
        return got.reshape(q.shape + got.shape[1:])

    return quantile
