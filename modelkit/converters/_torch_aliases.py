"""Aliased aten ops written as the ops they alias, in an exported program, before torch.onnx translates it.

Keras' torch backend computes `x * 3`, `x - 1`, `x / 2` and `x > 0` with torch.multiply, subtract, divide and
greater, on the scalar made a 0-d int32 tensor; torch promotes the types when it runs. torch.onnx (2.13) promotes
them for aten.mul / sub / div / gt but not for their aliases, and wrote `Mul(float, int32)`, which onnxruntime
refuses to load ("Type parameter (T) of Optype (Mul) bound to different types"): any functional model with a
Python number beside a tensor failed the torch route. The aliases compute the same as the ops they name.
"""
from __future__ import annotations

from typing import Any

_ALIASES = {"multiply": "mul", "subtract": "sub", "divide": "div", "true_divide": "div", "greater": "gt",
            "greater_equal": "ge", "less": "lt", "less_equal": "le", "not_equal": "ne"}


def _alias_targets() -> dict[Any, Any]:
    import torch

    aten = torch.ops.aten
    targets = {}
    for alias, canonical in _ALIASES.items():
        packet, own = getattr(aten, alias), getattr(aten, canonical)
        for overload in packet.overloads():
            if overload in own.overloads():
                targets[getattr(packet, overload)] = getattr(own, overload)
    return targets


def canonical_aliases(program: Any) -> int:
    """Retarget each aliased aten op of `program`'s graph (in place) to the op it aliases; how many were."""
    targets = _alias_targets()
    done = 0
    for node in program.graph_module.graph.nodes:
        if node.op == "call_function" and node.target in targets:
            node.target = targets[node.target]
            done += 1
    if done:
        program.graph_module.recompile()
    return done
