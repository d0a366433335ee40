"""Keras' weights lifted as constants by torch.export, given back to the parameters they copy.

torch.export (non-strict) swaps a module's parameters for its own while it traces, but a Keras variable keeps its
own reference to its tensor, so every weight Keras reads comes into the program as a lifted constant beside the
parameter it copies, and the program stores both: a NASNetMobile's .pt2 held 17.5 MB of weights and 17.5 MB of
the same values as constants, its .pte 33 MB for a 16 MB ONNX (nc132). `constants_as_parameters` reads each such
constant from its parameter (the same storage, else the same values: the weights are frozen at inference).
"""
from __future__ import annotations

from typing import Any


def constants_as_parameters(program: Any) -> int:
    """Rewrite `program` (an ExportedProgram) in place so that each lifted constant equal to one of its parameters
    reads that parameter; the constants are dropped. Returns how many were."""
    import torch
    from torch.export.graph_signature import InputKind

    specs = program.graph_signature.input_specs
    placeholders = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    params = [(s, program.state_dict[s.target]) for s in specs
              if s.kind == InputKind.PARAMETER and s.target in program.state_dict]
    by_storage = {_key(t): s for s, t in params}
    dropped = 0
    for spec in [s for s in specs if s.kind == InputKind.CONSTANT_TENSOR]:
        value = program.constants.get(spec.target)
        if not isinstance(value, torch.Tensor) or value.is_meta:
            continue
        same = by_storage.get(_key(value)) or next(
            (s for s, t in params if t.shape == value.shape and t.dtype == value.dtype and torch.equal(t, value)), None)
        if same is None:
            continue
        placeholders[spec.arg.name].replace_all_uses_with(placeholders[same.arg.name])
        program.graph.erase_node(placeholders[spec.arg.name])
        specs.remove(spec)
        del program.constants[spec.target]
        dropped += 1
    if dropped:
        program.graph_module.recompile()
    return dropped


def _key(t: Any) -> tuple[Any, ...]:
    return (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)
