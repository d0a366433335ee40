"""A product with a constant matrix, written as `aten.linear` before ExecuTorch's int8 quantizer annotates the graph.

Keras' Dense under torch is `matmul(x, kernel) + bias`, and torch.export keeps it as aten.matmul and aten.add.
XNNPACKQuantizer quantizes fully connected layers only as aten.linear: every Dense stayed float32 in an "int8"
.pte (measured: a 64-512-512-10 digits MLP, the int8 file 1.00x the float one's size and 1.00x its speed). Each
matmul (or mm) of a tensor by a constant 2-D kernel becomes linear(x, kernel.T), taking the bias from an add of a
constant vector right after it: the same arithmetic, which the quantizer takes as int8 with per-channel weights.
"""
from __future__ import annotations

from operator import attrgetter
from typing import Any


def dense_as_linear(model: Any) -> int:
    """Rewrite `model` (a torch.fx GraphModule, weights as get_attr nodes) in place; how many products it rewrote."""
    import torch

    aten = torch.ops.aten
    graph = model.graph
    done, replaced = 0, set()
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target not in (aten.matmul.default, aten.mm.default):
            continue
        x, w = node.args[0], node.args[1]
        kernel = _constant(model, w)
        fake_mode = getattr(node.meta.get("val"), "fake_mode", None)
        if kernel is None or kernel.dim() != 2 or fake_mode is None:
            continue
        bias_add, bias = _bias_after(model, node, kernel.shape[1])
        name = _free_name(model, f"{w.target.replace('.', '_')}_linear")
        model.register_buffer(name, kernel.detach().t().contiguous())
        with graph.inserting_before(node):
            weight = graph.get_attr(name)
            weight.meta["val"] = fake_mode.from_tensor(getattr(model, name), static_shapes=True)
            linear = graph.call_function(aten.linear.default, (x, weight, bias) if bias is not None else (x, weight))
        last = bias_add if bias_add is not None else node
        linear.meta = dict(last.meta)
        last.replace_all_uses_with(linear)
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
