"""Graph passes on a torch.export program before ExecuTorch lowers it (modelkit.converters.keras_executorch): each
rewrites a pattern Keras' torch backend exports that to_edge or the runtime refuses, into the same numbers."""
from __future__ import annotations

from typing import Any


def drop_layout_copies(program: Any) -> None:
    """Remove `contiguous(x, memory_format=...)` (a `clone` once decomposed): a layout-only copy of a functional
    graph, the identity in torch semantics. Kept where a view reads the copy of a tensor that is not contiguous:
    there the copy is what makes the view possible (Keras' UpSampling1D on torch repeats by expand, clone and
    view; without its clone to_edge refused "Cannot view a tensor with ... strides (48, 4, 0, 1)", nc53)."""
    import torch

    graph = program.graph_module.graph
    copies = (torch.ops.aten.contiguous.default, torch.ops.aten.clone.default)
    views = (torch.ops.aten.view.default, torch.ops.aten._unsafe_view.default)
    for node in list(graph.nodes):
        if node.op == "call_function" and node.target in copies and "memory_format" in node.kwargs:
            val = getattr(node.args[0], "meta", {}).get("val")
            laid_out = val is None or not hasattr(val, "is_contiguous") or val.is_contiguous()
            if not laid_out and any(user.target in views for user in node.users):
                continue
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
    program.graph_module.recompile()


def splits_as_slices(program: Any) -> None:
    """Each part of a split (`torch.split`, `chunk`: Keras' torch `rgb_to_hsv` splits the channels) as a slice of its
    input. ExecuTorch 1.5.1 runs split_with_sizes only at the batch it was traced with: at any other batch the
    method failed ("execute() failed with error 0x12"; 0x10 in a whole colour layer, nc78); a slice runs at every
    batch. Splits along a dimension of unknown size are left as they are."""
    import operator

    import torch

    graph = program.graph_module.graph
    aten = torch.ops.aten
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target not in (aten.split_with_sizes.default, aten.split.Tensor):
            continue
        source = node.args[0]
        val = getattr(source, "meta", {}).get("val")
        dim = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)
        dim = dim % val.dim() if val is not None else dim
        total = val.shape[dim] if val is not None else None
        users = list(node.users)
        if not isinstance(total, int) or not all(u.target is operator.getitem for u in users):
            continue
        step = node.args[1]
        sizes = [min(step, total - s) for s in range(0, total, step)] if isinstance(step, int) else list(step)
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        for user in users:
            i = user.args[1]
            with graph.inserting_before(user):
                bounds = (source, dim, starts[i], starts[i] + sizes[i])
                part = graph.call_function(aten.slice.Tensor, bounds)
            part.meta = dict(user.meta)
            user.replace_all_uses_with(part)
            graph.erase_node(user)
        graph.erase_node(node)
    program.graph_module.recompile()


def contiguous_constants(program: Any) -> Any:
    """Every folded constant in the standard (contiguous) layout. A Keras kernel folded into torch's (out, in, h, w)
    is a permuted view; with one output channel (a denoiser's, a depth or saliency map's last convolution) that view
    is also channels-last contiguous, so XNNPACK's layout pass tagged the weight channels-last where the convolution
    reads it channels-first and refused the program ("The same constant data tensor can't be used in NHWC format in
    one place and NCHW in another").
    A view torch calls contiguous can still carry odd strides on its dimensions of size 1 (a Conv1D(1, 1) kernel,
    (1, 16, 1) with strides (1, 1, 16)); ExecuTorch reads a dim order from the strides, and its portable convolution
    refused that weight at run time ("tensor_is_default_or_channels_last_dim_order(weight)", nc170), so the strides
    themselves are made standard."""
    import torch

    sig = program.graph_signature
    names = {**sig.inputs_to_parameters, **sig.inputs_to_buffers, **sig.inputs_to_lifted_tensor_constants}
    for node in program.graph.nodes:
        name = names.get(node.name) if node.op == "placeholder" else None
        val = node.meta.get("val")
        if name is None or val is None or tuple(val.stride()) == _standard_strides(val.shape):
            continue
        store = program.constants if name in program.constants else program.state_dict
        store[name] = store[name].clone(memory_format=torch.contiguous_format)
        node.meta["val"] = val.clone(memory_format=torch.contiguous_format)
    return program


def _standard_strides(shape: Any) -> tuple[int, ...]:
    """The strides of a dense row-major tensor of `shape` (what torch.empty gives)."""
    strides, step = [], 1
    for size in reversed(tuple(shape)):
        strides.append(step)
        step *= max(int(size), 1)
    return tuple(reversed(strides))


def cats_of_one_dtype(program: Any) -> None:
    """Each input of a concatenation cast to its output's dtype first. torch.cat promotes mixed dtypes (Keras'
    Concatenate of an IntegerLookup's int64 one-hot rows and float features); ExecuTorch's edge dialect refused it
    ("These operators are taking Tensor inputs with mismatched dtypes: aten.cat.default", nc129)."""
    import torch

    graph = program.graph_module.graph
    for node in list(graph.nodes):
        out = node.meta.get("val") if node.op == "call_function" else None
        if node.target != torch.ops.aten.cat.default or out is None:
            continue
        parts = list(node.args[0])
        for i, part in enumerate(parts):
            val = getattr(part, "meta", {}).get("val")
            if val is None or val.dtype == out.dtype:
                continue
            with graph.inserting_before(node):
                cast = graph.call_function(torch.ops.aten._to_copy.default, (part,), {"dtype": out.dtype})
            cast.meta["val"] = val.to(out.dtype)
            parts[i] = cast
        node.args = (parts, *node.args[1:])
    program.graph_module.recompile()


def drop_weight_asserts(program: Any) -> None:
    """Remove the metadata asserts (`_assert_tensor_metadata`: dtype, device, layout) on the program's weights and
    constants, which hold by construction. Keras' torch backend checks each weight it casts, and after constant
    folding the assert was the weight's only reader: the lowered program stored every weight twice, as read and as
    folded (nc132: a NASNetMobile .pte of 33 MB for a 16 MB ONNX)."""
    import torch
    from torch.export.graph_signature import InputKind

    weights = {s.arg.name for s in program.graph_signature.input_specs if s.kind != InputKind.USER_INPUT}
    graph = program.graph_module.graph
    for node in list(graph.nodes):
        if node.op == "call_function" and node.target == torch.ops.aten._assert_tensor_metadata.default \
                and getattr(node.args[0], "name", None) in weights and not node.users:
            graph.erase_node(node)
    program.graph_module.recompile()
