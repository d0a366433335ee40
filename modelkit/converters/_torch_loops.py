"""The LSTM / GRU cell arithmetic of Keras in torch, one step (for torch's scan) and as TorchScript loops.

Imported only by the torch edges while they trace (modelkit.converters._torch_rnn), in a process that
has loaded torch already: TorchScript compiles these functions from their source and resolves `torch`
from this module's globals, hence the import at the top. Inputs are time first and already projected by
the kernel (`xw`: time, batch, gates x units); `keep` (time, batch, 1) is the mask; a masked step keeps
the state, and outputs the new state, or zeros when `zero_masked`, as Keras' masked loop does.
"""

import functools
from typing import Any, Callable, List, Tuple

import torch


def lstm_step(carry: Tuple[torch.Tensor, torch.Tensor], xw: torch.Tensor, recurrent_kernel: torch.Tensor,
              bias: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """One step of Keras' LSTM cell (gates i, f, c, o; sigmoid / tanh)."""
    h, c = carry
    i, f, g, o = torch.chunk(xw + h @ recurrent_kernel + bias, 4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def gru_step(carry: Tuple[torch.Tensor], xw: torch.Tensor, recurrent_kernel: torch.Tensor,
             bias: torch.Tensor) -> Tuple[torch.Tensor]:
    """One step of Keras' GRU cell with reset_after=True (gates z, r, h; sigmoid / tanh)."""
    (h,) = carry
    x_z, x_r, x_h = torch.chunk(xw + bias[0], 3, dim=-1)
    h_z, h_r, h_h = torch.chunk(h @ recurrent_kernel + bias[1], 3, dim=-1)
    z, r = torch.sigmoid(x_z + h_z), torch.sigmoid(x_r + h_r)
    return (z * h + (1 - z) * torch.tanh(x_h + r * h_h),)


def lstm_loop(xw: torch.Tensor, keep: torch.Tensor, h: torch.Tensor, c: torch.Tensor, recurrent_kernel: torch.Tensor,
              bias: torch.Tensor, zero_masked: bool) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keras' masked LSTM loop over lstm_step: (outputs, h, c)."""
    outputs: List[torch.Tensor] = []
    for t in range(xw.size(0)):
        h_new, c_new = lstm_step((h, c), xw[t], recurrent_kernel, bias)
        h, c = torch.where(keep[t], h_new, h), torch.where(keep[t], c_new, c)
        outputs.append(torch.where(keep[t], h_new, torch.zeros_like(h_new)) if zero_masked else h)
    return torch.stack(outputs, 0), h, c


def gru_loop(xw: torch.Tensor, keep: torch.Tensor, h: torch.Tensor, recurrent_kernel: torch.Tensor,
             bias: torch.Tensor, zero_masked: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """Keras' masked GRU loop over gru_step (reset_after=True): (outputs, h)."""
    outputs: List[torch.Tensor] = []
    for t in range(xw.size(0)):
        h_new = gru_step((h,), xw[t], recurrent_kernel, bias)[0]
        h = torch.where(keep[t], h_new, h)
        outputs.append(torch.where(keep[t], h_new, torch.zeros_like(h_new)) if zero_masked else h)
    return torch.stack(outputs, 0), h


@functools.cache
def scripted(cell: str) -> Callable[..., Any]:
    """The TorchScript-compiled masked loop of `cell` ('lstm' or 'gru'), compiled once per process."""
    return torch.jit.script(lstm_loop if cell == "lstm" else gru_loop)
