"""Sizes computed from an open length, traced to the axes they are, for TVM 0.27's importer.

Keras' MultiHeadAttention(use_causal_mask=True) compares `Range(0, queries)` as a column against `Range(0, keys)`
as a row, both lengths read from the scores' shape; a positional encoding takes `ops.arange(length)`; a padding
mask with a causal one is `Expand(ones, Cast(Concat(1, Slice(Cast(Shape(x))), ...)))`. tf2onnx computes such sizes
through Casts, Squeezes and Concats to tensors, and TVM's importer gives a Range of a tensor limit, or an Expand
or ConstantOfShape to a tensor shape, no shape: the masked scores lost theirs ("Reshape expects the input tensor
to have known shape"), the sine of the positions failed legalization ("emit_te now only supports Tensor that has
ShapeExpr shape"), and the model was refused at an open length.

Each such size is traced by running its arithmetic alone in onnxruntime on made-up shapes: every axis of every
tensor it reads gets a distinct size, twice with other sizes (not at reshapes.PROBES, which give every input the
same length: a cross-attention's query and memory axes would look alike). Where a Range's length is one axis's
both times, `counted_ranges` writes it as `CumSum(ConstantOfShape(Gather(Shape(t), [axis]), 1), exclusive)` (0,
1, ..., n - 1, in the Range's type), times its step and plus its start; where each element of an Expand's or
ConstantOfShape's shape is one axis's or the same constant both times, `traced_shapes` writes that shape as the
Concat of `Shape(t, start=axis, end=axis + 1)` and constants. Both are shapes the importer keeps. A size that is
no axis's is left as it is. The compiled library is verified against the original graph, at other sizes too.
"""
from __future__ import annotations

from typing import Any

from ..._onnx import constant_values, opset_of, slim
from .reshapes import constant_names, shape_derived


def counted_ranges(proto: Any) -> tuple[Any, int]:
    """(the graph with each Range over an axis's length written as a CumSum of ones, how many); unchanged (and
    0) when there is none or onnxruntime cannot evaluate the limits."""
    import onnx

    graph = proto.graph
    known = constant_names(graph)
    consts = constant_values(graph)
    producers = {o: n for n in graph.node for o in n.output}
    ranges = [n for n in graph.node if n.op_type == "Range" and n.input[0] in consts and n.input[2] in consts
              and n.input[1] not in known and shape_derived(n.input[1], producers, known)]
    places = _limit_axes(proto, ranges, consts, producers) if ranges else {}
    if not places:
        return proto, 0
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    for node in list(out.graph.node):
        if node.op_type == "Range" and node.output[0] in places:
            _count(out.graph, node, places[node.output[0]], consts[node.input[0]], consts[node.input[2]])
    return slim(out), len(places)  # onnxslim drops the length arithmetic no node reads now


def _made_up(proto: Any, outputs: list[str], producers: dict[str, Any]) -> list[tuple[dict, dict]]:
    """[({output: its value}, {made-up size: (tensor, axis)}) per round]: the arithmetic computing `outputs`
    (from shapes and constants only) run by itself in onnxruntime, every axis of every tensor whose Shape it
    reads given a distinct size, in two rounds of other sizes; [] when it cannot run alone."""
    import numpy as np
    import onnx
    from onnx import helper

    nodes, shapes, todo, seen = [], {}, list(outputs), set()
    while todo:  # the arithmetic, up to the Shape nodes it reads
        t = todo.pop()
        if t in seen or t not in producers:
            continue
        seen.add(t)
        node = producers[t]
        if node.op_type == "Shape":
            shapes[node.output[0]] = node
        else:
            nodes.append(node)
            todo.extend(node.input)
    typed = onnx.shape_inference.infer_shapes(proto)
    infos = {v.name: v.type.tensor_type for v in (*typed.graph.input, *typed.graph.value_info, *typed.graph.output)}
    if any(n.input[0] not in infos or not infos[n.input[0]].HasField("shape") for n in shapes.values()):
        return []  # a rank shape inference does not know
    ranks = {n.input[0]: len(infos[n.input[0]].shape.dim) for n in shapes.values()}
    sub = helper.make_graph(
        [n for n in proto.graph.node if id(n) in {id(m) for m in nodes}], "sizes",  # in the graph's order
        [helper.make_tensor_value_info(name, onnx.TensorProto.INT64, None) for name in shapes],
        [helper.make_tensor_value_info(o, infos[o].elem_type if o in infos else onnx.TensorProto.INT64, None)
         for o in outputs],
        [i for i in proto.graph.initializer if i.name in {i for n in nodes for i in n.input}])
    model = helper.make_model(sub, opset_imports=proto.opset_import, ir_version=proto.ir_version)
    try:
        import onnxruntime as ort

        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        rounds = []
        for made_up in (lambda j, a: 1000 * (j + 1) + 7 * a + 3, lambda j, a: 3001 + 1013 * j + 131 * a):
            dims = {t: [made_up(j, a) for a in range(r)] for j, (t, r) in enumerate(ranks.items())}  # per tensor:
            sizes = {d: (t, a) for t, ds in dims.items() for a, d in enumerate(ds)}  # two Shapes of it agree
            feed = {}
            for name, node in shapes.items():
                attrs, whole = {a.name: a.i for a in node.attribute}, dims[node.input[0]]
                feed[name] = np.array(whole[attrs.get("start", 0):attrs.get("end", len(whole))], np.int64)
            rounds.append((dict(zip(outputs, session.run(outputs, feed))), sizes))
    except Exception:  # noqa: BLE001 - arithmetic that cannot run alone changes nothing (the refusal stays)
        return []
    return rounds


def _limit_axes(proto: Any, ranges: list[Any], consts: dict[str, Any],
                producers: dict[str, Any]) -> dict[str, tuple[str, int]]:
    """{Range output: (tensor, axis) whose size is the Range's length in both rounds of _made_up}."""
    import math

    import numpy as np

    rounds = _made_up(proto, [r.input[1] for r in ranges], producers)
    places = {}
    for r in ranges:  # the same axis in both rounds: a length that is another axis's by chance is not taken
        start, step = (float(np.asarray(consts[i]).item()) for i in (r.input[0], r.input[2]))
        found = set()
        for limits, sizes in rounds:
            limit = np.asarray(limits[r.input[1]])
            length = max(math.ceil((float(limit.item()) - start) / step), 0) if limit.size == 1 and step else -1
            found.add(sizes.get(length))
        if len(found) == 1 and None not in found:
            places[r.output[0]] = found.pop()
    return places


def traced_shapes(proto: Any) -> tuple[Any, int]:
    """(the graph with each Expand / ConstantOfShape whose shape is computed from shapes given that shape as a
    Concat of one-axis Shapes and constants, how many); unchanged (and 0) when there is none."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    if (opset_of(proto) or 0) < 15:  # Shape's start / end
        return proto, 0
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    known = constant_names(out.graph)
    producers = {o: n for n in out.graph.node for o in n.output}
    position = {"Expand": 1, "ConstantOfShape": 0}
    nodes = [n for n in out.graph.node if n.op_type in position
             and (t := n.input[position[n.op_type]]) not in known and shape_derived(t, producers, known)]
    rounds = _made_up(out, list(dict.fromkeys(n.input[position[n.op_type]] for n in nodes)), producers) \
        if nodes else []
    count = 0
    for node in nodes if rounds else []:
        name = node.input[position[node.op_type]]
        pieces = _pieces([np.asarray(values[name]).ravel().tolist() for values, _ in rounds],
                         [sizes for _, sizes in rounds])
        if pieces is None:
            continue
        parts, index = [], list(out.graph.node).index(node)
        for k, piece in enumerate(pieces):
            part = f"{name}__traced{count}_{k}"
            if isinstance(piece, tuple):
                out.graph.node.insert(index, helper.make_node("Shape", [piece[0]], [part], start=piece[1],
                                                              end=piece[1] + 1))
                index += 1
            else:
                out.graph.initializer.append(numpy_helper.from_array(np.array([piece], np.int64), part))
            parts.append(part)
        out.graph.node.insert(index, helper.make_node("Concat", parts, [f"{name}__traced{count}"], axis=0))
        node.input[position[node.op_type]] = f"{name}__traced{count}"
        count += 1
    return (slim(out), count) if count else (proto, 0)


def _pieces(seen: list[list[int]], sizes: list[dict[int, tuple[str, int]]]) -> list[Any] | None:
    """Per element of a computed shape seen in each round: (tensor, axis) when it is that axis's size in every
    round, the constant when it is the same value every time and no made-up size; None when one is neither, or
    when every element is constant (nothing to trace)."""
    if len({len(v) for v in seen}) != 1:
        return None
    pieces: list[Any] = []
    for values in zip(*seen):
        axes = {s.get(v) for v, s in zip(values, sizes)}
        if len(axes) == 1 and None not in axes:
            pieces.append(axes.pop())
        elif len(set(values)) == 1 and axes == {None}:
            pieces.append(int(values[0]))
        else:
            return None
    return pieces if any(isinstance(p, tuple) for p in pieces) else None


def _count(graph: Any, node: Any, place: tuple[str, int], start: Any, step: Any) -> None:
    """Replace `node` (a Range) in `graph` by a count of place's axis: 0 .. n-1, times step, plus start."""
    import numpy as np
    from onnx import helper, numpy_helper

    tensor, axis = place
    out = node.output[0]
    dtype = np.asarray(start).dtype
    prefix = f"{out}__count"
    graph.initializer.extend([numpy_helper.from_array(np.array([axis], np.int64), f"{prefix}_axis"),
                              numpy_helper.from_array(np.array(0, np.int64), f"{prefix}_dim")])
    one = numpy_helper.from_array(np.array([1], dtype), f"{prefix}_one")
    steps = [helper.make_node("Shape", [tensor], [f"{prefix}_shape"]),
             helper.make_node("Gather", [f"{prefix}_shape", f"{prefix}_axis"], [f"{prefix}_size"], axis=0),
             helper.make_node("ConstantOfShape", [f"{prefix}_size"], [f"{prefix}_ones"], value=one),
             helper.make_node("CumSum", [f"{prefix}_ones", f"{prefix}_dim"], [f"{prefix}_n"], exclusive=1)]
    last = f"{prefix}_n"
    for op, value in (("Mul", step), ("Add", start)):
        if np.asarray(value).item() == (1 if op == "Mul" else 0):
            continue
        graph.initializer.append(numpy_helper.from_array(np.asarray(value, dtype).reshape(()), f"{prefix}_{op}"))
        steps.append(helper.make_node(op, [last, f"{prefix}_{op}"], [f"{prefix}_{op}_out"]))
        last = f"{prefix}_{op}_out"
    steps[-1].output[0] = out
    index = list(graph.node).index(node)
    graph.node.remove(node)
    for i, step_node in enumerate(steps):
        graph.node.insert(index + i, step_node)
    for info in [v for v in graph.value_info if v.name == out]:  # a shape recorded for the Range's output
        graph.value_info.remove(info)
