"""Reshape targets computed at run time from the open dimensions, made constant for TVM 0.27's importer.

Exporters compute some Reshape targets from the input's sizes: tf2onnx's Einsum of a MultiHeadAttention folds the
batch and heads into one axis (`Shape -> Gather -> ReduceProd -> Concat -> Reshape`); Keras' GroupNormalization
splits the channels into groups (`[batch, length, groups, channels / groups]`, computed); tf2onnx's Tensordot of a
Dense on a sequence flattens the leading axes before its MatMul and restores them after. The importer takes a
Reshape only with a constant or symbolic shape ("Reshape requires the input new shape to be Shape"), so such a
model compiled at batch 1 only, or not at all with an open length.

Every such Reshape's input and output shapes are read by running the graph in onnxruntime at PROBES (the batch
and each other open dimension varied independently). An output axis that does not change gets its size, one that
equals the input's axis at the same position at every probe gets 0 (ONNX: copy that axis), and at most one other
axis gets -1; anything else is left as it is. A Dense on a sequence (`Reshape -> MatMul(2-D weight) -> Reshape`,
the output the input's leading axes and the weight's columns) becomes the one MatMul it is, which broadcasts over
the leading axes (`_flattened_matmuls`). The arithmetic that computed the targets is then dead and removed by
onnxslim. The compiled library is verified against the original ONNX model like any hop, at other sizes of each
open dimension too, which is what proves the constant targets.
"""
from __future__ import annotations

from typing import Any

# (batch, size of the first other open axis) per probe; a further open axis gets 32 more than the one before it
# (sizes of distinct axes differ, so an axis copied from another position is not mistaken for its own); multiples
# of 32 run through the poolings of a U-Net
PROBES = ((1, 32), (2, 32), (1, 64), (3, 96))
# taken where the graph cannot run at PROBES: a learned position table of 64 rows gathers out of range at 96 (nc110)
SMALL_PROBES = ((1, 8), (2, 8), (1, 16), (3, 24))


def constant_reshapes(proto: Any) -> tuple[Any, int]:
    """(the graph with each computed Reshape target made constant or its Dense pattern one MatMul, how many);
    unchanged (and 0) when no Reshape's target is computed or onnxruntime cannot run the probe."""
    import onnx
    from onnx import numpy_helper

    from ..._onnx import slim

    graph = proto.graph
    known = constant_names(graph)
    producers = {o: n for n in graph.node for o in n.output}
    computed = [n for n in graph.node if n.op_type == "Reshape" and len(n.input) == 2 and n.input[1] not in known
                and not any(a.name == "allowzero" and a.i for a in n.attribute)
                and shape_derived(n.input[1], producers, known)]
    if not computed:
        return proto, 0
    flattening = {n.output[0]: x for n in computed if (x := _dense_input(n, producers, known)) is not None}
    names = [t for n in computed for t in (n.input[0], n.output[0])] + list(flattening.values())
    shapes = probe_shapes(proto, list(dict.fromkeys(names)))
    if shapes is None:
        return proto, 0
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    out, count = _flattened_matmuls(out, flattening, shapes)
    for node in out.graph.node:
        if node.op_type != "Reshape" or node.input[1] in known or node.input[1].endswith("__target"):
            continue
        target = _target(shapes.get(node.output[0]), shapes.get(node.input[0]))
        if target is None:
            continue
        name = f"{node.output[0]}__target"
        out.graph.initializer.append(numpy_helper.from_array(target, name))
        node.input[1] = name
        count += 1
    return (slim(out), count) if count else (proto, 0)  # onnxslim drops the arithmetic no node reads now


def constant_names(graph: Any) -> set[str]:
    """The names of the graph's initializers and Constant nodes' outputs."""
    return {i.name for i in graph.initializer} | {n.output[0] for n in graph.node if n.op_type == "Constant"}


def graph_readers(graph: Any) -> dict[str, list[Any]]:
    """{tensor name: the nodes that read it}."""
    found: dict[str, list[Any]] = {}
    for n in graph.node:
        for i in n.input:
            found.setdefault(i, []).append(n)
    return found


def shape_derived(name: str, producers: dict[str, Any], known: set[str]) -> bool:
    """Whether tensor `name` is computed from shapes and constants only (each path up ends at a Shape, Size or
    constant): a bound computed from the data's values would look constant on the probes' zeros."""
    todo, seen = [name], set()
    while todo:
        t = todo.pop()
        if t in seen or t in known or not t:
            continue
        seen.add(t)
        node = producers.get(t)
        if node is None:  # a graph input
            return False
        if node.op_type not in ("Shape", "Size"):
            todo.extend(node.input)
    return True


def _dense_input(node: Any, producers: dict[str, Any], known: set[str]) -> str | None:
    """x, when `node` (a Reshape) restores the leading axes after `Reshape(x) -> MatMul(_, constant)`; else None."""
    matmul = producers.get(node.input[0])
    if matmul is None or matmul.op_type != "MatMul" or matmul.input[1] not in known:
        return None
    flat = producers.get(matmul.input[0])
    return flat.input[0] if flat is not None and flat.op_type == "Reshape" else None


def _flattened_matmuls(proto: Any, flattening: dict[str, str],
                       shapes: dict[str, list[tuple[int, ...]]]) -> tuple[Any, int]:
    """Each `y = Reshape(MatMul(Reshape(x, [-1, k]), w), computed)` whose y is x's leading axes and then fixed
    sizes whose product is w's columns at every probe, written `y = MatMul(x, w)` (MatMul broadcasts over the
    leading axes), with a Reshape to `[0, ..., 0, sizes]` after it when the sizes split the columns (a
    MultiHeadAttention's heads); where x's last axes together are k (an output projection of heads x size), x is
    first reshaped to `[0, ..., 0, k]`; the first Reshape is left unread (onnxslim removes it); how many."""
    import numpy as np
    from onnx import helper, numpy_helper

    weights = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    producers = {o: n for n in proto.graph.node for o in n.output}
    readers = graph_readers(proto.graph)
    count = 0
    for node in list(proto.graph.node):
        if node.op_type != "Reshape" or node.output[0] not in flattening:
            continue
        matmul = producers[node.input[0]]
        w, x = weights.get(matmul.input[1]), flattening[node.output[0]]
        split = _split_columns(shapes.get(node.output[0]), shapes.get(x), w)
        if split is None or len(readers.get(matmul.output[0], [])) != 1:
            continue
        kept, tail = split
        if kept == len(shapes[x][0]) - 1:  # x's last axis is the Dense's input
            matmul.input[0] = x
        else:  # x's last axes together are its rows (an einsum contracting heads and size): folded into one axis
            folded = f"{matmul.output[0]}__folded"  # by a Reshape of its own: the flattening may feed other MatMuls
            proto.graph.initializer.append(numpy_helper.from_array(np.array([0] * kept + [w.shape[0]], np.int64),
                                                                   f"{folded}__target"))
            index = list(proto.graph.node).index(matmul)
            proto.graph.node.insert(index, helper.make_node("Reshape", [x, f"{folded}__target"], [folded]))
            matmul.input[0] = folded
        if tail == (w.shape[1],):  # the Dense itself: its MatMul writes y
            matmul.output[0] = node.output[0]
            proto.graph.node.remove(node)
        else:
            name = f"{node.output[0]}__target"
            target = np.array([0] * kept + list(tail), dtype=np.int64)
            proto.graph.initializer.append(numpy_helper.from_array(target, name))
            node.input[1] = name
        count += 1
    return proto, count


def _split_columns(seen: list[tuple[int, ...]] | None, ins: list[tuple[int, ...]] | None,
                   w: Any) -> tuple[int, tuple[int, ...]] | None:
    """(how many leading axes of x the output keeps, the fixed sizes after them in each probed output), where x's
    other axes multiply to w's rows and those sizes to its columns at every probe; or None. x's last axis alone
    is a Dense per step; several (a projection of heads x size) fold into one."""
    import math

    if w is None or w.ndim != 2 or not seen or not ins or len(seen) != len(ins) or len({len(i) for i in ins}) != 1:
        return None
    for kept in range(len(ins[0]) - 1, 0, -1):
        tails = {s[kept:] for s, i in zip(seen, ins) if s[:kept] == i[:kept] and math.prod(i[kept:]) == w.shape[0]}
        if len(tails) == 1 and all(s[:kept] == i[:kept] for s, i in zip(seen, ins)):
            (tail,) = tails
            if tail and math.prod(tail) == w.shape[1] and len({i[kept:] for i in ins}) == 1:
                return kept, tail
    return None


def probe_shapes(proto: Any, names: list[str]) -> dict[str, list[tuple[int, ...]]] | None:
    """{tensor name: its shape at each of PROBES (or SMALL_PROBES, where the graph cannot run at PROBES)}, by
    onnxruntime on zeros (an open batch takes the probe's batch, each other open axis its size); None when the
    graph has a Loop or If body (whose shapes are not probed) or the probe fails (a size the model refuses)."""
    import numpy as np

    values = probe_values(proto, names)
    if values is None:
        return None
    return {n: [tuple(int(d) for d in np.shape(v)) for v in seen] for n, seen in values.items()}


def probe_values(proto: Any, names: list[str]) -> dict[str, list[Any]] | None:
    """{tensor name: its value at each of PROBES} (see probe_shapes), or None."""
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
    try:
        import onnxruntime as ort

        typed = onnx.shape_inference.infer_shapes(proto)
        types = {v.name: v.type.tensor_type.elem_type for v in typed.graph.value_info}
        types.update({v.name: v.type.tensor_type.elem_type for v in (*proto.graph.input, *proto.graph.output)})
        probe = onnx.ModelProto()
        probe.CopyFrom(proto)
        del probe.graph.output[:]
        probe.graph.output.extend(helper.make_tensor_value_info(n, types.get(n, onnx.TensorProto.FLOAT), None)
                                  for n in names)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.log_severity_level = 4  # a probe size the model refuses is not an error to print
        session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception:  # noqa: BLE001 - a probe that cannot run changes nothing (the batch-1 fallback stays)
        return None
    for probes in (PROBES, SMALL_PROBES):
        try:
            found: dict[str, list[Any]] = {n: [] for n in names}
            for batch, size in probes:
                feed = {s.name: np.zeros(_probe_shape(s.shape, batch, size), dtype=s.dtype) for s in sig.inputs}
                for n, value in zip(names, session.run(names, feed)):
                    found[n].append(value)
            return found
        except Exception:  # noqa: BLE001 - a size the model refuses: the smaller probes, then nothing changes
            continue
    return None


def _probe_shape(shape: tuple[int | None, ...], batch: int, size: int) -> tuple[int, ...]:
    """An input's shape at one probe: the batch on an open axis 0, `size` (+32 per open axis before it) on others."""
    out, extra = [], 0
    for axis, d in enumerate(shape):
        if d is not None:
            out.append(d)
        elif axis == 0:
            out.append(batch)
        else:
            out.append(size + extra)
            extra += 32
    return tuple(out)


def _target(shapes: list[tuple[int, ...]] | None, inputs: list[tuple[int, ...]] | None = None) -> Any:
    """The constant target of a Reshape's output shapes seen at PROBES, given its input's: each fixed axis its size,
    an axis equal to the input's at that position 0 (copy), at most one other -1; None when that cannot say it."""
    import numpy as np

    if not shapes or len({len(s) for s in shapes}) != 1 or any(0 in s for s in shapes):
        return None
    first = shapes[0]
    target = []
    for a, d in enumerate(first):
        if all(s[a] == d for s in shapes):
            target.append(d)
        elif inputs and len(inputs) == len(shapes) and all(a < len(i) and i[a] == s[a] for s, i in zip(shapes, inputs)):
            target.append(0)
        else:
            target.append(-1)
    return np.array(target, dtype=np.int64) if target.count(-1) <= 1 else None
