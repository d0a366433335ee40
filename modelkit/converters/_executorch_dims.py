"""Open dimensions of an ExecuTorch program: each one dynamic up to a bound that memory is planned for.

ExecuTorch sizes every tensor of a program ahead of time, from the upper bound of each of its symbolic sizes. The
batch runs 1..max_batch and every other open dimension (a sequence length, an image side) 1..max_length; the
export goes through modelkit.converters._torch_dims as for .pt2 (ranges narrowed by torch where a model needs
them, guards found, the program checked against eager Keras at other batches and sizes), with those bounds.
Five things the lowering needs on top:

- `to_edge` re-traces the program and loses the upper bounds (its shape environment guesses one from the example:
  15 for a batch of 3), so `set_bounds` puts them back before memory is planned;
- XNNPACK serializes a reshape with one dynamic dimension at most, and its partitioner does not check it for an
  unsqueeze, nor for the unsqueeze / squeeze it wraps around a 1-D convolution (Conv1dUnsqueezePass): with the
  batch and the length open the lowering failed ("XNNPACK reshape only supports 1 dynamic dimension");
  `partitioner_configs` leave such nodes to ExecuTorch's portable kernels, which take any shape, and so every node
  with a tensor of more than 6 dimensions, which XNNPACK cannot define;
- a strided `same` convolution's padding over an open size is `torch.sym_max(...)`, a Python function `to_edge`'s
  verifier refuses: `prim_sym_ops` writes it as ExecuTorch's prim op, which it would become after `to_edge` anyway;
- the program's bounds travel inside it (constant method `modelkit_dim_ranges`, JSON), so the engine refuses a size
  past them with a ShapeError before the runtime does (it fails on a resize past the plan, error 0x12);
- lowering traces the program again from its example's sizes, where a size inside may be 1 (a length of 8 strided 8
  times) and broadcasting then fixes it at 1: `lowering_example` gives larger sizes to export it again from first
  (`reexport`, which also exports an int8 module over the float program's ranges), and `check_largest` runs every
  program once at the largest sizes it plans for, where a tensor planned too small fails.
"""
from __future__ import annotations

import json
from typing import Any

from ..errors import ConversionError, ModelkitError, UnsupportedConversionError, first_line
from ..keras_io.inputs import input_spec_text
from ..spec import Signature
from . import _torch_dims
from ._shapes import axis_bounds
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
    if traced > max_length:  # a model that does not run at 8, 10, ... is traced at 64, 96, ... (fit_examples)
        raise UnsupportedConversionError(
            f"{src_name} does not run at the small sizes an export is traced at (8, 10, ...: skip connections that "
            f"take only multiples of a stride, or valid convolutions that need a minimum size) and is traced at "
            f"{traced}, past max_length={max_length}: convert with --max-length {traced} or more "
            f"(max_length={traced} in Python)")
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


LOWERING_SIZE = 64  # an open dim's size when a program is traced again for lowering (plus 2 per axis past the first)


def lowering_example(program: Any, sig: Signature, accepted: Ranges) -> tuple[Any, ...] | None:
    """Example inputs at larger sizes (64, 66, ... within the accepted ranges) where a symbolic size inside `program`
    is 1 at its example, else None. The lowering traces the program again from its example's sizes, and a size of 1
    there is taken as 1 where broadcasting checks it: memory was planned for 1 row of a length 8 strided 8 times (nc114,
    a keyword spotter: batch 7 x length 80 failed, "resize a bounded tensor with a maximum capacity of 2048 elements
    to 3584", error 0x10)."""
    import torch

    from ._torch_module import EXAMPLE_BATCH

    ones = any(isinstance(d, torch.SymInt) and not d.node.expr.is_number and d.node.hint == 1
               for node in program.graph.nodes for val in _vals(node.meta.get("val")) for d in val.shape)
    if not ones:
        return None
    sizes = {axis: max(lo, min(LOWERING_SIZE + 2 * (axis - 1), hi)) for axis, (lo, hi) in _bounds(accepted).items()}
    return _torch_dims.inputs_at(sig, EXAMPLE_BATCH, sizes)


def _bounds(accepted: Ranges) -> dict[int, tuple[int, int]]:
    """Open non-batch axis -> the sizes every input takes there (the accepted ranges are bounded here)."""
    return {axis: r for axis, r in axis_bounds({k: tuple(r) for k, r in accepted.items()
                                                  if r is not None and r[1] is not None}).items() if axis > 0}


def _vals(val: Any) -> list[Any]:
    """The tensors of a node's meta value (one, or a tuple's)."""
    vals = val if isinstance(val, (tuple, list)) else [val]
    return [v for v in vals if hasattr(v, "shape") and hasattr(v, "dtype")]


def reexport(module: Any, sig: Signature, accepted: Ranges, src_name: str,
             example: tuple[Any, ...] | None = None) -> Any:
    """`module` (an exported program's, or its quantized form) exported again over the ranges the first export
    accepted, from `example` (default the first export's): as named Dims, else as Dim.AUTO within them,
    size-oblivious first, as the first export may have needed (nc114: a strided `same` convolution's padding over
    an open length, `max(0, ...)`, guards torch cannot prove for every length from named Dims, "Constraints
    violated"). A program that narrows a range is not taken; ConversionError if none."""
    import torch

    from ._torch_module import example_inputs

    failed = ""
    for auto, oblivious in ((False, False), (True, True), (True, False)):
        with _torch_dims.symbolic_sizes(), executorch_ops(), unrolled_rnn(fused=False), \
                _torch_dims.size_oblivious(oblivious):
            try:
                program = torch.export.export(module, example if example is not None else example_inputs(sig),
                                              strict=False, dynamic_shapes=_shapes(sig, accepted, auto))
            except (RuntimeError, TypeError, ValueError) as exc:  # torch's UserError is a RuntimeError
                failed = failed or first_line(exc)
                continue
        narrowed = [key for key, got in _torch_dims.ranges(program, sig).items() if not _covers(got, accepted.get(key))]
        if not narrowed:
            return program
        failed = failed or f"the program narrows input {narrowed[0][0]!r} dimension {narrowed[0][1]}"
    raise ConversionError(f"torch.export could not export {src_name} again over the sizes its program takes: {failed}")


def check_largest(path: Any, sig: Signature, accepted: Ranges, max_batch: int, src_name: str) -> None:
    """Run the program at the largest sizes its memory is planned for (batch max_batch, every open dim at its upper
    bound; zeros): a tensor planned too small fails there (the runtime refuses to resize it past its capacity) while
    every verification size, smaller, passes. ConversionError naming the sizes and the runtime's reason."""
    import numpy as np

    from ..runtime import executorch as engine

    tops = {axis: hi for axis, (_, hi) in _bounds(accepted).items()}
    feed = {s.name: np.zeros(_torch_dims.shape_at(s, max_batch, tops), s.dtype) for s in sig.inputs}
    try:
        engine.load(path).predict(feed)
    except ModelkitError as exc:
        sizes = ", ".join(f"{n!r} {tuple(v.shape)}" for n, v in feed.items())
        lows = {axis: lo or 1 for axis, (lo, _) in _bounds(accepted).items()}
        try:  # the smallest sizes too: a program that fails there is no matter of its planned sizes (nc170)
            engine.load(path).predict({s.name: np.zeros(_torch_dims.shape_at(s, 1, lows), s.dtype)
                                       for s in sig.inputs})
        except ModelkitError:
            raise ConversionError(f"the ExecuTorch program of {src_name} fails to run, at the largest sizes it plans "
                                  f"for ({sizes}) and at the smallest: {first_line(exc)}") from exc
        fix = ("--max-length N, the longest it takes (max_length=N in Python)" if _torch_dims.open_axes(sig) else
               "--max-batch N (max_batch=N in Python)")
        raise ConversionError(f"the ExecuTorch program of {src_name} fails at the largest sizes it plans for "
                              f"({sizes}): {first_line(exc)}; a model that does not run at those sizes (a table of "
                              f"positions with fewer rows) converts with a smaller {fix}") from exc


def _shapes(sig: Signature, accepted: Ranges, auto: bool) -> tuple[Any, ...]:
    """dynamic_shapes over the `accepted` ranges: one Dim per name (the batch shared), or Dim.AUTO past the batch."""
    import torch

    dims: dict[Any, Any] = {}
    out = []
    for spec in sig.inputs:
        entry = {}
        for axis, size in enumerate(spec.shape):
            lo, hi = accepted.get((spec.name, axis)) or (None, None)
            if size is None and hi is not None:
                key = "batch" if axis == 0 else ident(f"{spec.name}_{axis}")
                entry[axis] = (torch.export.Dim.AUTO(min=lo or 1, max=hi) if auto and axis > 0 else
                               dims.setdefault(key, torch.export.Dim(key, min=lo or 1, max=hi)))
        out.append(entry or None)
    return tuple(out)


def _covers(got: list[int | None] | None, want: list[int | None] | None) -> bool:
    """Whether the range `got` takes every size of `want` (None: fixed, or not open)."""
    if want is None:
        return True
    return got is not None and (got[0] or 1) <= (want[0] or 1) and (got[1] is None or
                                                                     (want[1] is not None and got[1] >= want[1]))


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
    return [_xnnpack_can_take(swap.get(c, c)) for c in ALL_PARTITIONER_CONFIGS]


XNN_MAX_TENSOR_DIMS = 6  # XNNPACK defines no tensor of more dimensions (xnn_status_unsupported_parameter)


def _xnnpack_can_take(config: Any) -> Any:
    """`config` taking only nodes XNNPACK's lowering can take. Tensors of at most 6 dimensions: a MultiHeadAttention
    over two axes (attention_axes=(1, 2), nc174) permutes rank-7 tensors, which the partitioner delegated and the
    program then failed to load ("XNNCompiler: Failed to define tensor 10"). No dequantized scalar (0-dim) from
    outside: XNNPACK's channels-last pass indexes such an input's first row (ExecuTorch 1.5: "IndexError: invalid
    index of a 0-dim tensor" in ChannelsLastTaggedReshapePass), seen on a discriminator's minibatch std, a mean over
    the whole batch broadcast into a feature map (nc181, int8). ExecuTorch's portable kernels take both."""
    taken = config.check_constraints

    def check_constraints(self: Any, node: Any, ep: Any) -> bool:
        vals = _vals(node.meta.get("val")) + [v for a in node.all_input_nodes for v in _vals(a.meta.get("val"))]
        return (all(len(v.shape) <= XNN_MAX_TENSOR_DIMS for v in vals) and not _scalar_dequantized(node)
                and taken(self, node, ep))

    return type(config.__name__, (config,), {"check_constraints": check_constraints})


def _scalar_dequantized(node: Any) -> bool:
    """Whether `node` quantizes or dequantizes a scalar (0-dim) computed at run time, or takes one dequantized (a
    frozen scalar constant is dequantized straight from its parameter, which the pass reads without indexing)."""
    return _runtime_scalar_qdq(node) or any(_runtime_scalar_qdq(a) for a in node.all_input_nodes)


def _runtime_scalar_qdq(node: Any) -> bool:
    target = str(node.target)
    if "quantize_per_tensor" not in target or any(len(v.shape) for v in _vals(node.meta.get("val"))):
        return False
    if "dequantize" not in target:
        return True
    source = node.args[0] if node.args else None
    return getattr(source, "op", None) == "call_function" and "quantize" in str(source.target)


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


def fitted_max_length(module: Any, sig: Signature, default: int, src_name: str) -> int:
    """The default max_length, or the longest size under it that the eager model runs at (every open non-batch
    dimension at that size) when it fails at the default: a table of 64 positions failed the program's run at its
    largest planned sizes (128) and needed --max-length 64 (nc133). Bisected from the size the export traces at;
    a model that fails there too keeps the default, and the export says why."""
    import torch

    from .._text import progress
    from ._torch_module import EXAMPLE_BATCH

    def fails(size: int) -> str | None:
        try:
            with torch.no_grad():
                module(*_torch_dims.inputs_at(sig, EXAMPLE_BATCH, size))
        except Exception as exc:  # noqa: BLE001 - any error of the user's model at this size
            return first_line(exc)
        return None

    opened = _torch_dims.open_axes(sig)
    if not opened or (reason := fails(default)) is None:
        return default
    ok = max(_torch_dims.example_size(axis) for _, axis in opened)
    if fails(ok) is not None:
        return default
    bad = default
    while bad - ok > 1:
        mid = (ok + bad) // 2
        failed = fails(mid)
        ok, bad, reason = (mid, bad, reason) if failed is None else (ok, mid, failed)
    progress(f"executorch: {src_name} fails past {ok} along its open dimensions ({reason[:160]}): the program "
             f"plans for sizes up to {ok} (--max-length N chooses)")
    return ok
