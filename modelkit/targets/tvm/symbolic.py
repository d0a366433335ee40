"""Rewrites that let TVM 0.27's Relax importer keep a dynamic batch symbolic, before import.

The importer keeps a shape symbolic only through shape ops; what an exporter writes around a recurrent layer's
zero state, its gate slices or an attention mask turns the batch into an opaque tensor or a size it cannot prove
equal to the batch, and legalization fails ("emit_te now only supports Tensor that has ShapeExpr shape"). Same
numbers; the compiled library is verified against the original ONNX model in onnxruntime like any hop:

- **Integer Casts on shape values** (tf2onnx builds a recurrent layer's zero state as
  `Shape -> Cast(int32) -> Slice -> Concat -> Cast(int64) -> Expand`): the importer keeps a shape symbolic
  only through shape ops, and a Cast turns the batch into an opaque tensor, so the zero state has no
  known shape and legalization fails ("emit_te now only supports Tensor that has ShapeExpr shape"). The
  Casts are removed (their consumers read the shape itself; an Identity would not keep it symbolic either)
  and the int32 constants concatenated with them made int64, when the graph still type-checks (the ONNX
  checker's full check) afterwards; otherwise nothing is changed.
- **Gathers of constant positions from a Shape** (onnxruntime's optimizer, run by its int8 quantizer, folds a
  Transpose before a Shape into `Gather(Shape(x), perm)`; the importer takes the gathered shape as an opaque
  tensor, and the zero state loses its shape as above): written as the Concat of one-element
  `Shape(x, start=i, end=i+1)`, which it keeps symbolic (`shape_gathers`).
- **Whole-axis Slices** of a dynamic batch (`[0:INT_MAX]`, tf2onnx's gate slices; `[0:1000000000]`, a
  MultiHeadAttention's mask): that axis is dropped from the Slice, so the batch stays the batch
  (`whole_axis_slices`).
"""
from __future__ import annotations

from typing import Any

from ..._onnx import opset_of

_SHAPE_OPS = {"Slice", "Gather", "Squeeze", "Unsqueeze", "Identity"}
WHOLE_AXIS_END = 10**9  # a Slice end at least this large keeps a whole axis (no batch is that large)


def symbolic_batch(proto: Any) -> tuple[Any, int]:
    """The graph rewritten so that the importer keeps a dynamic batch symbolic: gathers from a shape made shape
    slices, shape casts removed, whole-axis slices dropped (see the module docstring); returns the number of nodes
    changed."""
    proto, gathers = shape_gathers(proto)
    proto, casts = shape_casts(proto)
    proto, slices = whole_axis_slices(proto)
    return proto, gathers + casts + slices


def shape_gathers(proto: Any) -> tuple[Any, int]:
    """(the graph with each Gather of constant positions from a whole Shape -- onnxruntime's optimizer folds a
    Transpose before a Shape into `Gather(Shape(x), perm)` -- written as the Concat of one-element Shapes
    (`Shape(x, start=i, end=i+1)`), which the importer keeps symbolic as it does a Slice of the shape; how many)."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper


    if opset_of(proto) < 15:  # Shape's start / end
        return proto, 0
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    graph = out.graph
    inits = {i.name: i for i in graph.initializer}
    whole = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Shape"
             and all(a.name == "start" and a.i == 0 for a in n.attribute)}
    nodes, count = [], 0
    for node in graph.node:
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        idx = inits.get(node.input[1]) if node.op_type == "Gather" and len(node.input) == 2 else None
        positions = numpy_helper.to_array(idx).astype(np.int64).tolist() if idx is not None and len(idx.dims) == 1 \
            else None
        if node.op_type != "Gather" or node.input[0] not in whole or axis != 0 or not positions \
                or min(positions) < 0:
            nodes.append(node)
            continue
        parts = [f"{node.output[0]}__dim{k}" for k in range(len(positions))]
        nodes += [helper.make_node("Shape", [whole[node.input[0]]], [p], start=i, end=i + 1)
                  for p, i in zip(parts, positions)]
        nodes.append(helper.make_node("Concat", parts, [node.output[0]], axis=0))
        count += 1
    if not count:
        return proto, 0
    del graph.node[:]
    graph.node.extend(nodes)
    return out, count


def whole_axis_slices(proto: Any) -> tuple[Any, int]:
    """Slice axes that keep the whole axis (start 0, end >= 10**9, step 1; tf2onnx slices a recurrent cell's
    gates as `[0:INT_MAX, a:b]`, a MultiHeadAttention's mask as `[0:1000000000]`) removed from each Slice of
    constant parameters, a Slice of whole axes only made an Identity: the importer gives such an axis the size
    min(end, batch), which it cannot prove equal to the batch, so the cell's Add (the mask's And) has no known
    shape (the same legalization failure as above). Returns the number of Slices changed."""
    import numpy as np
    from onnx import numpy_helper

    graph = proto.graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    added: list[Any] = []
    count = 0
    for node in graph.node:
        params = list(node.input[1:5])
        if node.op_type != "Slice" or len(params) < 3 or not all(p in inits for p in params if p) or not params[2]:
            continue
        starts, ends, axes = (inits[p].reshape(-1) for p in params[:3])
        steps = inits[params[3]].reshape(-1) if len(params) > 3 and params[3] else np.ones_like(starts)
        keep = [k for k in range(len(axes)) if not (starts[k] == 0 and ends[k] >= WHOLE_AXIS_END and steps[k] == 1)]
        if len(keep) == len(axes):
            continue
        count += 1
        if not keep:  # every sliced axis whole: the data as it is
            node.op_type = "Identity"
            del node.input[1:]
            continue
        names = []
        for role, values in (("starts", starts), ("ends", ends), ("axes", axes), ("steps", steps)):
            names.append(f"{node.name or node.output[0]}__mk_{role}")
            added.append(numpy_helper.from_array(values[keep].astype(values.dtype), names[-1]))
        node.input[1:] = names
    graph.initializer.extend(added)
    return proto, count


def shape_casts(proto: Any) -> tuple[Any, int]:
    """(the graph with integer Casts of shape values removed, how many). See the module docstring."""
    import numpy as np
    import onnx
    from onnx import TensorProto, numpy_helper

    graph = proto.graph
    inits = {i.name: i for i in graph.initializer}
    shape_values: set[str] = set()
    casts: list[Any] = []
    widen: set[str] = set()
    for node in graph.node:
        if node.op_type == "Shape":
            shape_values.add(node.output[0])
        elif node.op_type == "Cast" and node.input[0] in shape_values:
            to = next(a.i for a in node.attribute if a.name == "to")
            if to in (TensorProto.INT32, TensorProto.INT64):
                casts.append(node)
                shape_values.add(node.output[0])
        elif node.op_type in _SHAPE_OPS and node.input and node.input[0] in shape_values:
            shape_values.add(node.output[0])
        elif node.op_type == "Concat" and any(i in shape_values for i in node.input):
            others = [i for i in node.input if i not in shape_values]
            if all(i in inits and inits[i].data_type == TensorProto.INT32 and len(inits[i].dims) == 1
                   for i in others):
                widen.update(others)
                shape_values.add(node.output[0])
    if not casts:
        return proto, 0
    trial = onnx.ModelProto()
    trial.CopyFrom(proto)
    for init in trial.graph.initializer:
        if init.name in widen:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.int64), init.name))
    outputs = {o.name for o in trial.graph.output}
    bypass = {c.output[0]: c.input[0] for c in casts if c.output[0] not in outputs}
    kept_nodes = [n for n in trial.graph.node if not (n.op_type == "Cast" and n.output[0] in bypass)]
    for node in kept_nodes:
        node.input[:] = [_resolve(bypass, i) for i in node.input]
    del trial.graph.node[:]
    trial.graph.node.extend(kept_nodes)
    kept = [vi for vi in trial.graph.value_info if vi.name not in shape_values]
    del trial.graph.value_info[:]
    trial.graph.value_info.extend(kept)
    try:
        onnx.checker.check_model(trial, full_check=True)  # types included
    except Exception:  # noqa: BLE001 - a consumer wanted the cast type: keep the graph as it was
        return proto, 0
    return trial, len(bypass)


def _resolve(bypass: dict[str, str], name: str) -> str:
    while name in bypass:
        name = bypass[name]
    return name


__all__ = ["symbolic_batch", "shape_casts", "shape_gathers", "whole_axis_slices"]
