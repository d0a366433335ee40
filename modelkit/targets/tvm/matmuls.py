"""Attention over an open length for TVM: the batched MatMuls tf2onnx writes for an Einsum, kept batched.

tf2onnx writes a MultiHeadAttention's `einsum("bqhd,bkhd->bhqk")` (and its `"bhqk,bkhd->bqhd"`) as a 5-D Transpose,
a Reshape that folds the batch and the heads into one axis (`[ReduceProd(Shape[0:2]), -1, d]`), a 3-D MatMul and a
Reshape back. Folded, the axis is batch x heads, which no constant Reshape target says (reshapes.py copies an axis
or gives one -1), so TVM's importer met the ReduceProd on shapes and refused the model at an open length.

`unfolded_matmuls` reads every such Reshape's input and output shapes at reshapes.PROBES. Where the output is the
input's first k axes folded, then its other axes once the axes of size 1 at every probe are dropped, on both sides
of the MatMul with the same first k axes, the Reshape becomes a Squeeze of those unit axes (the MatMul then
broadcasts over the k axes), a Transpose `[0, 2, 1]` after it swaps the last two axes of the wider tensor, and the
Reshape after the MatMul, whose element count is unchanged, takes its constant target from reshapes.py (the
arithmetic that computed the folding targets is removed by onnxslim: TVM's importer fails on it even unread).

`gemms_as_matmuls` writes a projection tf2onnx (or onnxslim) made a Gemm of a flattened input back as the MatMul
(plus Add) it is, which reshapes.py's Dense rule keeps over the leading axes.
"""
from __future__ import annotations

import math
from typing import Any

from .reshapes import constant_names, graph_readers, probe_shapes, shape_derived


def gemms_as_matmuls(proto: Any) -> tuple[Any, int]:
    """Each `Gemm(Reshape(x), constant B[, constant C])` with alpha 1 and transA 0, read by a Reshape only, as
    `MatMul(_, B or B^T)` (plus `Add(_, beta * C)`); (the graph, how many). Values are unchanged."""
    import numpy as np
    from onnx import helper, numpy_helper

    graph = proto.graph
    weights = {i.name: i for i in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    readers = graph_readers(graph)
    count = 0
    for node in list(graph.node):
        if node.op_type != "Gemm" or len(node.input) < 2 or node.input[1] not in weights:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        flat = producers.get(node.input[0])
        reads = readers.get(node.output[0], [])
        if attrs.get("alpha", 1.0) != 1.0 or attrs.get("transA", 0) or flat is None or flat.op_type != "Reshape" \
                or not reads or any(r.op_type != "Reshape" for r in reads):
            continue
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        if bias is not None and bias not in weights:
            continue
        w = numpy_helper.to_array(weights[node.input[1]])
        name = f"{node.output[0]}__weight"
        graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(w.T if attrs.get("transB") else w),
                                                         name))
        out = node.output[0]
        index = list(graph.node).index(node)
        graph.node.remove(node)
        product = f"{out}__matmul" if bias is not None else out
        graph.node.insert(index, helper.make_node("MatMul", [node.input[0], name], [product]))
        if bias is not None:
            c = numpy_helper.to_array(weights[bias]) * np.float32(attrs.get("beta", 1.0))
            graph.initializer.append(numpy_helper.from_array(c.astype(w.dtype), f"{out}__bias"))
            graph.node.insert(index + 1, helper.make_node("Add", [product, f"{out}__bias"], [out]))
        count += 1
    return proto, count


def unfolded_matmuls(proto: Any) -> tuple[Any, int]:
    """(the graph with each batch-folding Reshape pair around a MatMul unfolded, how many MatMuls); unchanged (and
    0) when there is none or onnxruntime cannot run the probes."""
    import numpy as np
    import onnx
    from onnx import helper

    graph = proto.graph
    known = constant_names(graph)
    producers = {o: n for n in graph.node for o in n.output}
    readers = graph_readers(graph)
    pairs = []  # (matmul, [(reshape, transpose or None), (reshape, transpose or None)])
    for node in graph.node:
        if node.op_type != "MatMul":
            continue
        sides = [_folding_side(i, producers, readers, known) for i in node.input[:2]]
        if all(s is not None for s in sides):
            pairs.append((node, sides))
    if not pairs:
        return proto, 0
    names = [t for _, sides in pairs for r, _ in sides for t in (r.input[0], r.output[0])]
    shapes = probe_shapes(proto, list(dict.fromkeys(names)))
    if shapes is None:
        return proto, 0
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    by_name = {n.output[0]: n for n in out.graph.node}
    count = 0
    for _, sides in pairs:
        plans = [_unfold(shapes.get(r.input[0]), shapes.get(r.output[0])) for r, _ in sides]
        if any(p is None for p in plans) or len({tuple(map(tuple, p[2])) for p in plans}) != 1:
            continue  # each side unfolds, over the same leading axes at every probe (the MatMul broadcasts them)
        for (reshape, transpose), (k, units, _) in zip(sides, plans):
            node = by_name[reshape.output[0]]
            index = list(out.graph.node).index(node)
            out.graph.node.remove(node)
            name = f"{node.output[0]}__units"
            out.graph.initializer.append(onnx.numpy_helper.from_array(np.array(units, np.int64), name))
            op = helper.make_node("Squeeze", [node.input[0], name], [node.output[0]]) if units else \
                helper.make_node("Identity", [node.input[0]], [node.output[0]])
            out.graph.node.insert(index, op)
            if transpose is not None:
                t = by_name[transpose.output[0]]
                del t.attribute[:]
                t.attribute.append(helper.make_attribute("perm", [*range(k), k + 1, k]))
        count += 1
    if not count:
        return proto, 0
    from ..._onnx import slim

    return slim(out), count  # the shape arithmetic of the folding targets, now read by nothing, removed


def _folding_side(name: str, producers: dict[str, Any], readers: dict[str, list[Any]],
                  known: set[str]) -> tuple[Any, Any] | None:
    """(Reshape, Transpose [0, 2, 1] or None) when MatMul input `name` is a Reshape with a computed target, maybe
    transposed, each read by the next only; else None."""
    from onnx import helper

    node, transpose = producers.get(name), None
    if node is not None and node.op_type == "Transpose" and len(readers.get(name, [])) == 1:
        perm = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "perm"), None)
        if list(perm or []) != [0, 2, 1]:
            return None
        transpose, node = node, producers.get(node.input[0])
    if node is None or node.op_type != "Reshape" or len(node.input) != 2 or node.input[1] in known:
        return None
    if len(readers.get(node.output[0], [])) != 1 or not shape_derived(node.input[1], producers, known):
        return None
    return node, transpose


def _unfold(ins: list[tuple[int, ...]] | None, outs: list[tuple[int, ...]] | None) -> tuple[int, list[int],
                                                                                            list[tuple]] | None:
    """(k, the input's axes of size 1 past k, the leading k axes at each probe) when each probed output (n, m, c)
    is the input's first k axes folded into n and its other axes, less those unit axes, (m, c); else None."""
    if not ins or not outs or len(ins) != len(outs) or any(len(o) != 3 for o in outs):
        return None
    rank = len(ins[0])
    for k in range(1, rank - 1):
        units = [a for a in range(k, rank) if all(i[a] == 1 for i in ins)]
        rest = [tuple(d for a, d in enumerate(i[k:], k) if a not in units) for i in ins]
        if all(len(i) == rank and math.prod(i[:k]) == o[0] and r == o[1:] for i, o, r in zip(ins, outs, rest)):
            return k, units, [i[:k] for i in ins]
    return None

