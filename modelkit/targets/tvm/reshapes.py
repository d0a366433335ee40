"""Reshape targets computed from the batch, made constant for TVM 0.27's importer (a dynamic batch kept).

Exporters compute some Reshape targets at run time from the batch: tf2onnx's Einsum of a MultiHeadAttention
folds the batch and heads into one axis (`Shape -> Gather -> ReduceProd -> Concat -> Reshape`). The importer
takes a Reshape only with a constant or symbolic shape ("Reshape requires the input new shape to be Shape"), and
takes no shape value into ReduceProd, so such a model compiled at batch 1 only.

When the batch is the only open dimension, every such Reshape's output shape is read by running the graph in
onnxruntime at batches 1, 2 and 3: a Reshape whose output has one axis that grows with the batch (size k *
batch) and all others fixed gets the constant target of those sizes with -1 on that axis; one whose output does
not change gets its sizes. Any other case (two axes that change, sizes not proportional to the batch) is left as
it is. The arithmetic that computed the targets is then dead and removed by onnxslim (its ReduceProd too). The compiled
library is verified against the original ONNX model at batches 1 and 7 like any hop, which is what proves the
constant targets.
"""
from __future__ import annotations

from typing import Any

BATCHES = (1, 2, 3)


def constant_reshapes(proto: Any) -> tuple[Any, int]:
    """(the graph with each batch-computed Reshape target made constant, how many); unchanged (and 0) when no
    Reshape's target is computed, an input has another open dimension, or onnxruntime cannot run the probe."""
    import onnx
    from onnx import numpy_helper

    from ..._onnx import slim

    graph = proto.graph
    known = {i.name for i in graph.initializer} | {n.output[0] for n in graph.node if n.op_type == "Constant"}
    computed = [n for n in graph.node if n.op_type == "Reshape" and len(n.input) == 2 and n.input[1] not in known
                and not any(a.name == "allowzero" and a.i for a in n.attribute)]
    if not computed:
        return proto, 0
    shapes = probe_shapes(proto, [n.output[0] for n in computed])
    if shapes is None:
        return proto, 0
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    count = 0
    for node in out.graph.node:
        target = _target(shapes.get(node.output[0])) if node.op_type == "Reshape" else None
        if target is None or node.input[1] in known:
            continue
        name = f"{node.output[0]}__target"
        out.graph.initializer.append(numpy_helper.from_array(target, name))
        node.input[1] = name
        count += 1
    return (slim(out), count) if count else (proto, 0)  # onnxslim drops the arithmetic no node reads now


def probe_shapes(proto: Any, names: list[str]) -> dict[str, list[tuple[int, ...]]] | None:
    """{tensor name: its shape at each of BATCHES}, by onnxruntime on zeros; None when an input has another open
    dimension, the graph has a Loop or If body (whose shapes are not probed), or the probe fails."""
    import numpy as np
    import onnx
    from onnx import helper

    from ...errors import ModelkitError
    from .compile import onnx_signature

    if any(a.type in (5, 10) for n in proto.graph.node for a in n.attribute):  # GRAPH / GRAPHS attributes
        return None
    try:
        sig = onnx_signature(proto)
    except ModelkitError:  # an input of a type the TVM path does not take: its import says so
        return None
    if any(None in s.shape[1:] for s in sig.inputs):
        return None
    try:
        import onnxruntime as ort

        typed = onnx.shape_inference.infer_shapes(proto)
        types = {v.name: v.type.tensor_type.elem_type for v in typed.graph.value_info}
        probe = onnx.ModelProto()
        probe.CopyFrom(proto)
        del probe.graph.output[:]
        probe.graph.output.extend(helper.make_tensor_value_info(n, types.get(n, onnx.TensorProto.FLOAT), None)
                                  for n in names)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.log_severity_level = 3
        session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
        found: dict[str, list[tuple[int, ...]]] = {n: [] for n in names}
        for batch in BATCHES:
            feed = {s.name: np.zeros((batch, *s.shape[1:]), dtype=s.dtype) for s in sig.inputs}
            for n, value in zip(names, session.run(names, feed)):
                found[n].append(tuple(int(d) for d in np.shape(value)))
        return found
    except Exception:  # noqa: BLE001 - a probe that cannot run changes nothing (the batch-1 fallback stays)
        return None


def _target(shapes: list[tuple[int, ...]] | None) -> Any:
    """The constant target of shapes seen at BATCHES, or None when it is not one axis of k * batch."""
    import numpy as np

    if not shapes or len({len(s) for s in shapes}) != 1 or any(0 in s for s in shapes):
        return None
    first = shapes[0]
    changing = [a for a in range(len(first)) if len({s[a] for s in shapes}) > 1]
    if len(changing) > 1:
        return None
    if changing:
        (axis,) = changing
        if any(s[axis] != first[axis] * b for s, b in zip(shapes, BATCHES)):
            return None
        return np.array([-1 if a == axis else d for a, d in enumerate(first)], dtype=np.int64)
    return np.array(first, dtype=np.int64)
