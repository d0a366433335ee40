"""A product with a constant kernel, written as `aten.linear` before ExecuTorch's int8 quantizer annotates the graph.

Keras' Dense under torch is `matmul(x, kernel) + bias`, and torch.export keeps it as aten.matmul and aten.add.
XNNPACKQuantizer quantizes fully connected layers only as aten.linear: every Dense stayed float32 in an "int8"
.pte (measured: a 64-512-512-10 digits MLP, the int8 file 1.00x the float one's size and 1.00x its speed). Each
matmul (or mm) of a tensor by a constant 2-D kernel becomes linear(x, kernel.T), taking the bias from an add of a
constant vector right after it: the same arithmetic, which the quantizer takes as int8 with per-channel weights.
EinsumDense (MultiHeadAttention's projections: "abc,cde->abde", "abcd,cde->abe") is aten.einsum, which the quantizer
leaves float too: one that contracts x's trailing axes with the kernel's leading ones becomes a flatten of those
axes, linear by the kernel as a matrix, and an unflatten of the kernel's other axes.
"""
from __future__ import annotations

import math
from operator import attrgetter
from typing import Any


def dense_as_linear(model: Any) -> int:
    """Rewrite `model` (a torch.fx GraphModule, weights as get_attr nodes) in place; how many products it rewrote."""
    import torch

    aten = torch.ops.aten
    graph = model.graph
    done, replaced = 0, set()
    for node in list(graph.nodes):
        plan = _plan(model, node) if node.op == "call_function" else None
        fake_mode = getattr(node.meta.get("val"), "fake_mode", None)
        if plan is None or fake_mode is None:
            continue
        x, w, kernel, start, sizes = plan
        bias_add, bias = _bias_after(model, node, kernel.shape[1]) if sizes is None else (None, None)
        name = _free_name(model, f"{w.target.replace('.', '_')}_linear")
        model.register_buffer(name, kernel.detach().t().contiguous())
        last = bias_add if bias_add is not None else node
        with graph.inserting_before(node):
            weight = graph.get_attr(name)
            weight.meta["val"] = fake_mode.from_tensor(getattr(model, name), static_shapes=True)
            if start is not None:  # the contracted axes as one
                x = _call(graph, fake_mode, aten.flatten.using_ints, (x, start), node.meta)
            out = _call(graph, fake_mode, aten.linear.default, (x, weight, bias) if bias is not None else (x, weight),
                        last.meta)
            if sizes is not None:  # the kernel's free axes apart again
                out = _call(graph, fake_mode, aten.unflatten.int, (out, -1, list(sizes)), last.meta)
        last.replace_all_uses_with(out)
        for dead in (bias_add, node):
            if dead is not None and not dead.users:
                graph.erase_node(dead)
        for check in [u for u in w.users if u.target == aten._assert_tensor_metadata.default]:
            graph.erase_node(check)  # export's check of the kernel's dtype: it would keep the float kernel read
        replaced.add(w.target)
        done += 1
    if done:
        graph.eliminate_dead_code()
        read = {n.target for n in graph.nodes if n.op == "get_attr"}
        for target in replaced - read:  # the float kernel, unless another op reads it: the program would carry it
            owner, _, leaf = target.rpartition(".")
            delattr(model.get_submodule(owner) if owner else model, leaf)
        model.recompile()
    return done


def _plan(model: Any, node: Any) -> tuple[Any, Any, Any, int | None, tuple[int, ...] | None] | None:
    """How to write `node` as linear: (x, the kernel's node, the kernel as a (K, N) matrix, the axis from which x's
    axes are flattened into K or None, the output's trailing sizes to unflatten N into or None); None if it is no
    product of a tensor by a constant kernel."""
    import torch

    aten = torch.ops.aten
    if node.target in (aten.matmul.default, aten.mm.default) and len(node.args) == 2:
        kernel = _constant(model, node.args[1])
        return None if kernel is None or kernel.dim() != 2 else (node.args[0], node.args[1], kernel, None, None)
    if node.target != aten.einsum.default or len(node.args) != 2 or len(node.args[1]) != 2:
        return None
    x, w = node.args[1]
    kernel, rank = _constant(model, w), getattr(getattr(x, "meta", {}).get("val"), "dim", lambda: -1)()
    split = None if kernel is None else einsum_split(node.args[0], rank, kernel.dim())
    if split is None:
        return None
    free, contracted = split
    w_free = tuple(int(d) for d in kernel.shape[contracted:])
    matrix = kernel.reshape(math.prod(kernel.shape[:contracted]), -1)
    return x, w, matrix, free if contracted > 1 else None, w_free if len(w_free) != 1 else None


def einsum_split(equation: str, x_rank: int, w_rank: int) -> tuple[int, int] | None:
    """(x's free axes, the contracted axes) when `equation` contracts x's trailing indices with the kernel's leading
    ones, in the same order, and writes x's free indices then the kernel's (EinsumDense: "abc,cde->abde",
    "abcd,cde->abe"); else None."""
    text = equation.replace(" ", "")
    if "..." in text or "->" not in text or text.count(",") != 1:
        return None
    (a, b), out = text.split("->")[0].split(","), text.split("->")[1]
    shared = "".join(c for c in a if c in b)
    n = len(shared)
    if (len(a) != x_rank or len(b) != w_rank or len(set(a)) != len(a) or len(set(b)) != len(b) or not n
            or a[len(a) - n:] != shared or b[:n] != shared or out != a[:len(a) - n] + b[n:]):
        return None
    return len(a) - n, n


def _call(graph: Any, fake_mode: Any, op: Any, args: tuple, meta: dict) -> Any:
    """A new call of `op` in `graph` with `meta` (its shape computed on fake tensors)."""
    node = graph.call_function(op, args)
    node.meta = dict(meta)
    with fake_mode:
        node.meta["val"] = op(*(a.meta["val"] if hasattr(a, "meta") else a for a in args))
    return node


def _constant(model: Any, node: Any) -> Any:
    """The float tensor a get_attr node reads, or None."""
    if getattr(node, "op", None) != "get_attr":
        return None
    value = attrgetter(node.target)(model)  # a dotted path into the module's attributes
    return value if hasattr(value, "is_floating_point") and value.is_floating_point() else None


def _bias_after(model: Any, product: Any, width: int) -> tuple[Any, Any]:
    """(the add, its constant vector node) when the product's only use adds a constant of `width` values."""
    import torch

    users = list(product.users)
    if len(users) != 1 or users[0].target != torch.ops.aten.add.Tensor or users[0].kwargs.get("alpha", 1) != 1:
        return None, None
    add = users[0]
    others = [a for a in add.args if a is not product]
    if len(add.args) != 2 or len(others) != 1:
        return None, None
    value = _constant(model, others[0])
    if value is None or value.dim() != 1 or value.shape[0] != width:
        return None, None
    return add, others[0]


def _free_name(model: Any, base: str) -> str:
    name, k = base, 0
    while hasattr(model, name):
        k += 1
        name = f"{base}_{k}"
    return name
