"""Open dimensions of an ExecuTorch program: each one dynamic up to a bound that memory is planned for.

ExecuTorch sizes every tensor of a program ahead of time, from the upper bound of each of its symbolic sizes. The
batch runs 1..max_batch and every other open dimension (a sequence length, an image side) 1..max_length; the
export goes through modelkit.converters._torch_dims as for .pt2 (ranges narrowed by torch where a model needs
them, guards found, the program checked against eager Keras at other batches and sizes), with those bounds.
Four things the lowering needs on top:

- `to_edge` re-traces the program and loses the upper bounds (its shape environment guesses one from the example:
  15 for a batch of 3), so `set_bounds` puts them back before memory is planned;
- XNNPACK serializes a reshape with one dynamic dimension at most, and its partitioner does not check it for an
  unsqueeze, nor for the unsqueeze / squeeze it wraps around a 1-D convolution (Conv1dUnsqueezePass): with the
  batch and the length open the lowering failed ("XNNPACK reshape only supports 1 dynamic dimension");
  `partitioner_configs` leave such nodes to ExecuTorch's portable kernels, which take any shape;
- a strided `same` convolution's padding over an open size is `torch.sym_max(...)`, a Python function `to_edge`'s
  verifier refuses: `prim_sym_ops` writes it as ExecuTorch's prim op, which it would become after `to_edge` anyway;
- the program's bounds travel inside it (constant method `modelkit_dim_ranges`, JSON), so the engine refuses a size
  past them with a ShapeError before the runtime does (it fails on a resize past the plan, error 0x12).
"""
from __future__ import annotations

import json
from typing import Any

from ..errors import ConversionError, UnsupportedConversionError, first_line
from ..keras_io.inputs import input_spec_text
from ..spec import Signature
from . import _torch_dims
from ._torch_dims import Ranges, ident
from ._torch_export_ops import executorch_ops
from ._unroll import unrolled_rnn


def bounded_export(module: Any, sig: Signature, src_name: str, max_batch: int,
                   max_length: int) -> tuple[Any, Ranges]:
    """The program with its batch open up to max_batch, every other open dim up to max_length (as torch narrowed
    them); checked against the eager model at other batches (and sizes). The ranges accepted per (input, axis)."""
    import torch

    from ._torch_module import check_batches, example_inputs
    from ._torch_watch import watch

    opened = _torch_dims.open_axes(sig)
    traced = max((_torch_dims.example_size(axis) for _, axis in opened), default=0)
    if traced > max_length:  # a model that runs only at multiples of a stride is traced at 64, 96, ...
        raise UnsupportedConversionError(
            f"{src_name} runs only at some sizes of its open dimensions and is traced at {traced}, past "
            f"max_length={max_length}: convert with --max-length {traced} or more (max_length={traced} in Python)")
    if opened:  # the .pt2 edge's export, checks and refusals, with bounds
        try:
            with executorch_ops(), unrolled_rnn(fused=False):
                return _torch_dims.export(module, sig, example_inputs(sig), src_name, "executorch",
                                          bounds=(max_batch, max_length))
        except UnsupportedConversionError as exc:  # a layer fixes a length: the --input-spec that fixes it here
            fixed = " --input-spec ".join(input_spec_text(s, fill=64) for s in sig.inputs
                                          if any(n == s.name for n, _ in opened))
            raise UnsupportedConversionError(f"{exc}; or fix the size when converting (e.g. --input-spec {fixed})") \
                from exc
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    shapes = tuple({0: batch} if s.shape and s.shape[0] is None else None for s in sig.inputs)
    try:
        with watch(module, sig) as seen, _torch_dims.symbolic_sizes(), executorch_ops(), unrolled_rnn(fused=False):
            program = torch.export.export(module, example_inputs(sig), dynamic_shapes=(shapes,), strict=False)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ConversionError(f"torch.export could not export {src_name} with a batch of 1..{max_batch}: "
                              f"{first_line(exc)}{_torch_dims.batch_fixed_by(seen)}") from exc
    check_batches(program.module(), module, sig, "the exported program")
    return program, {(s.name, 0): [1, max_batch] for s in sig.inputs if s.shape and s.shape[0] is None}


def bounded_shapes(sig: Signature, accepted: Ranges) -> tuple[Any, ...]:
    """dynamic_shapes for exporting the quantized module again: the ranges the first export accepted."""
    import torch

    dims: dict[Any, Any] = {}
    out = []
    for spec in sig.inputs:
        entry = {}
        for axis, size in enumerate(spec.shape):
            lo, hi = accepted.get((spec.name, axis)) or (None, None)
            if size is None and hi is not None:
                key = "batch" if axis == 0 else ident(f"{spec.name}_{axis}")
                entry[axis] = dims.setdefault(key, torch.export.Dim(key, min=lo or 1, max=hi))
        out.append(entry or None)
    return tuple(out)


def ranges_json(sig: Signature, accepted: Ranges) -> str:
    """The open non-batch dims' ranges as the program carries them: {"input:axis": [min, max]}."""
    return json.dumps({f"{name}:{axis}": list(r) for (name, axis), r in accepted.items()
                       if axis > 0 and r is not None and any(s.name == name for s in sig.inputs)})


def set_bounds(program: Any, sig: Signature, accepted: Ranges, max_batch: int) -> None:
    """Set each user input's symbolic sizes in the edge `program` back to the ranges the export accepted (the batch
    1..max_batch), so memory planning sizes tensors for them."""
    import torch
    from torch.utils._sympy.value_ranges import ValueRanges

    users = program.graph_signature.user_inputs
    by_name = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    for spec, name in zip(sig.inputs, users):
        val = by_name[name].meta.get("val") if name in by_name else None
        for axis, size in enumerate(getattr(val, "shape", ())):
            if not isinstance(size, torch.SymInt) or not getattr(size.node.expr, "is_symbol", False):
                continue
            bounds = [1, max_batch] if axis == 0 else accepted.get((spec.name, axis))
            if bounds is not None and bounds[1] is not None:
                size.node.shape_env.var_to_range[size.node.expr] = ValueRanges(bounds[0] or 1, bounds[1])


def _dynamic(shape: Any) -> int:
    return sum(not isinstance(d, int) for d in shape)


def partitioner_configs() -> list[Any]:
    """XNNPACK's partitioner configs, with the unsqueeze and the 1-D convolution taken only where XNNPACK can
    serialize them: at most one dynamic dimension in the reshape it writes."""
    from executorch.backends.xnnpack.partition.config import ALL_PARTITIONER_CONFIGS
    from executorch.backends.xnnpack.partition.config.gemm_configs import ConvolutionConfig
    from executorch.backends.xnnpack.partition.config.generic_node_configs import UnsqueezeCopyConfig

    class Unsqueeze(UnsqueezeCopyConfig):  # type: ignore[misc, valid-type]
        def check_constraints(self, node: Any, ep: Any) -> bool:
            return _dynamic(node.meta["val"].shape) <= 1 and super().check_constraints(node, ep)

    class Convolution(ConvolutionConfig):  # type: ignore[misc, valid-type]
        def check_constraints(self, node: Any, ep: Any) -> bool:
            shape = node.args[0].meta["val"].shape
            one_d = len(shape) == 3  # lowered as unsqueeze, 2-D convolution, squeeze
            return (not one_d or _dynamic(shape) <= 1) and super().check_constraints(node, ep)

    swap = {UnsqueezeCopyConfig: Unsqueeze, ConvolutionConfig: Convolution}
    return [swap.get(c, c) for c in ALL_PARTITIONER_CONFIGS]


def planned_bytes(program: Any) -> int:
    """The memory the `forward` method plans for its tensors at their largest sizes (allocated at load)."""
    plans = [p for p in program.execution_plan if p.name == "forward"]
    return int(sum(plans[0].non_const_buffer_sizes)) if plans else 0


def prim_sym_ops(program: Any) -> None:
    """Size arithmetic written with Python functions (`torch.sym_max`: a strided 'same' convolution's padding,
    max((ceil(L / s) - 1) * s + k - L, 0), over an open size) as ExecuTorch's own prim ops, which it maps them to
    only after `to_edge`'s verifier has refused them (an AssertionError on any function but 'alloc')."""
    import types

    from executorch.exir.passes.executorch_prim_ops_registry import _PYTHON_SYM_OPS_TO_EXECUTORCH_SYM_OPS as prims

    changed = False
    for node in program.graph_module.graph.nodes:
        if node.op == "call_function" and isinstance(node.target, types.FunctionType) and node.target in prims:
            node.target = prims[node.target]
            changed = True
    if changed:
        program.graph_module.recompile()
