"""FLOPs of an ONNX graph at a concrete batch size, from shapes inferred by onnx.shape_inference.

Counted exactly (a multiply-add is 2 FLOPs):
  Conv (incl. grouped / depthwise): 2 * N * M * prod(out_spatial) * (C / group) * prod(kernel) (+ bias adds)
  ConvTranspose:                    2 * N * C * prod(in_spatial) * (M / group) * prod(kernel)
  MatMul:                           2 * prod(output) * K
  Gemm:                             2 * M * N * K (+ M * N when C is given)
Approximated by element counts: pooling = output elements * kernel size; global pooling and reductions
= input elements; other compute ops (Relu, Add, BatchNormalization, Softmax, ...) = output elements.
Pure data movement (Reshape, Transpose, Concat, Gather, Cast, Shape, ...) counts 0.
"""
from __future__ import annotations

import os
from math import prod
from pathlib import Path
from typing import Any

from ..errors import LoadError

ZERO_COST = {
    "Reshape", "Transpose", "Concat", "Gather", "GatherElements", "Cast", "Shape", "Identity", "Flatten",
    "Squeeze", "Unsqueeze", "Slice", "Split", "Constant", "ConstantOfShape", "Expand", "Tile", "Pad",
    "Dropout", "Size", "Range", "NonZero", "ScatterND", "DepthToSpace", "SpaceToDepth", "CastLike",
}
REDUCE = {"GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin",
          "ReduceProd", "ReduceL2", "ReduceL1", "ReduceSumSquare", "ReduceLogSumExp"}


def count_flops(path: str | os.PathLike, batch: int) -> dict[str, Any]:
    """{"total": FLOPs of one call at `batch`, "by_op": {op_type: FLOPs}, "unknown": [ops without shapes]}."""
    import onnx
    from onnx import shape_inference

    p = Path(path)
    try:
        model = onnx.load(str(p), load_external_data=False)
    except (OSError, ValueError, onnx.onnx_cpp2py_export.checker.ValidationError) as exc:  # type: ignore[attr-defined]
        raise LoadError(f"{p}: not a readable ONNX model ({exc})") from exc
    _fix_batch(model, batch)
    try:
        model = shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except (RuntimeError, onnx.shape_inference.InferenceError) as exc:  # type: ignore[attr-defined]
        raise LoadError(f"{p}: ONNX shape inference failed ({exc})") from exc
    by_op: dict[str, int] = {}
    unknown: set[str] = set()
    _graph_flops(model.graph, {}, {}, 1, by_op, unknown)
    return {"total": sum(by_op.values()), "by_op": dict(sorted(by_op.items(), key=lambda kv: -kv[1])),
            "unknown": sorted(unknown)}


def _graph_flops(g: Any, outer: dict[str, tuple[int, ...] | None], outer_consts: dict[str, Any], times: int,
                 by_op: dict[str, int], unknown: set[str], carried: list[str] | None = None) -> None:
    """Add `times` x the FLOPs of graph `g` (the model's, or a Loop's body, which sees its outer scope's names;
    `carried`: the outer names of a body's carried inputs, the Loop node's inputs after trip count and condition).
    A Loop with a constant trip count counts its body that many times (tf2onnx writes Keras' LSTM / GRU as one:
    counted as its output's elements before, the recurrent MatMuls were missing)."""
    from onnx import numpy_helper

    shapes = dict(outer)
    consts = dict(outer_consts)
    for vi in [*g.input, *g.value_info, *g.output]:
        shapes[vi.name] = _shape(vi)
    for t in g.initializer:
        shapes[t.name] = tuple(int(d) for d in t.dims)
        if len(t.dims) <= 1 and t.data_type == 7:  # int64 scalars: a Loop's trip count
            consts[t.name] = t
    # a Loop body: its carried inputs (after the iteration number and condition) take the outer shapes
    for body_input, outer_name in zip(g.input[2:], carried or []):
        if shapes.get(body_input.name) is None:
            shapes[body_input.name] = outer.get(outer_name)
    for node in g.node:
        if node.output and shapes.get(node.output[0]) is None:
            shapes[node.output[0]] = _propagated(node, shapes)
        if node.op_type == "Loop":
            trips = consts.get(node.input[0]) if node.input and node.input[0] else None
            body = _attr(node, "body", None)
            if trips is None or body is None:
                unknown.add("Loop")
                continue
            count = int(numpy_helper.to_array(trips).reshape(-1)[0])
            _graph_flops(body, shapes, consts, times * max(count, 0), by_op, unknown, carried=list(node.input[2:]))
            for out, init in zip(node.output, node.input[2:]):  # final carried values keep their shapes
                if shapes.get(out) is None:
                    shapes[out] = shapes.get(init)
            continue
        n = _node_flops(node, shapes)
        if n is None:
            unknown.add(node.op_type)
            continue
        if n:
            by_op[node.op_type] = by_op.get(node.op_type, 0) + n * times


ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Relu", "Sigmoid", "Tanh", "Softmax", "Neg", "Sqrt", "Reciprocal",
               "Exp", "Log", "Abs", "Clip", "Max", "Min", "Pow", "Where", "Erf", "HardSigmoid", "LeakyRelu"}


def _propagated(node: Any, shapes: dict[str, tuple[int, ...] | None]) -> tuple[int, ...] | None:
    """An output shape onnx's inference left open inside a Loop body (its carried state's type is unset there),
    from the inputs' shapes: elementwise ops broadcast, MatMul's last two axes; else None."""
    import numpy as np

    ins = [shapes.get(i) if i else None for i in node.input]
    if not ins or any(x is None for x in ins):
        return None
    try:
        if node.op_type in ELEMENTWISE:
            return tuple(int(d) for d in np.broadcast_shapes(*ins))
        if node.op_type == "MatMul" and len(ins[0]) >= 2 and len(ins[1]) >= 2:
            return (*np.broadcast_shapes(ins[0][:-2], ins[1][:-2]), ins[0][-2], ins[1][-1])
    except ValueError:
        return None
    return None


def _fix_batch(model: Any, batch: int) -> None:
    """Make dim 0 of every dynamic graph input concrete (other symbolic dims are left symbolic)."""
    inits = {t.name for t in model.graph.initializer}
    for inp in model.graph.input:
        if inp.name in inits or not inp.type.HasField("tensor_type"):
            continue
        dims = inp.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].Clear()
            dims[0].dim_value = int(batch)


def _shape(vi: Any) -> tuple[int, ...] | None:
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    dims = []
    for d in t.shape.dim:
        if not d.HasField("dim_value"):
            return None
        dims.append(int(d.dim_value))
    return tuple(dims)


def _attr(node: Any, name: str, default: Any) -> Any:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _node_flops(node: Any, shapes: dict[str, tuple[int, ...] | None]) -> int | None:
    op = node.op_type
    if op in ZERO_COST:
        return 0
    ins = [shapes.get(i) if i else None for i in node.input]
    out = shapes.get(node.output[0]) if node.output else None
    if op == "Conv":
        w = ins[1] if len(ins) > 1 else None
        if out is None or w is None:
            return None
        # w: (M, C / group, k...), so w[1] already accounts for grouped and depthwise convolutions
        n, m, spatial = out[0], out[1], out[2:]
        macs = n * m * prod(spatial) * w[1] * prod(w[2:])
        bias = n * m * prod(spatial) if len(ins) > 2 and node.input[2] else 0
        return 2 * macs + bias
    if op == "ConvTranspose":
        x, w = ins[0], ins[1] if len(ins) > 1 else None
        if x is None or w is None:
            return None
        # w: (C, M / group, k...); every input element scatters into M / group * prod(k) outputs
        return 2 * x[0] * x[1] * prod(x[2:]) * w[1] * prod(w[2:])
    if op == "MatMul" or op == "MatMulInteger":
        a = ins[0]
        if out is None or a is None:
            return None
        return 2 * prod(out) * a[-1]
    if op == "Gemm":
        a = ins[0]
        if out is None or a is None:
            return None
        k = a[0] if int(_attr(node, "transA", 0)) else a[-1]
        return 2 * prod(out) * k + (prod(out) if len(ins) > 2 and node.input[2] else 0)
    if op in ("MaxPool", "AveragePool", "LpPool"):
        if out is None:
            return None
        return prod(out) * prod(_attr(node, "kernel_shape", [1]))
    if op in REDUCE:
        return prod(ins[0]) if ins and ins[0] is not None else None
    if out is None:
        return None
    return prod(out)
