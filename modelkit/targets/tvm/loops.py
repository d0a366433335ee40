"""ONNX Loop nodes with a constant trip count, unrolled for TVM's importer (which has no Loop).

tf2onnx writes Keras' recurrent loop (a masked GRU, any RNN it does not fuse) as a Loop whose trip count
is a constant when the sequence length is fixed. `unroll_loops` copies the body that many times into the
main graph: each copy's inputs are the iteration number (a constant), the condition and the loop-carried
values of the copy before; its scan outputs are stacked along a new first axis, as Loop does. The body's
condition output is not consulted (the copies run the trip count); the compiled library is verified
against the ONNX model in onnxruntime like any hop, which is what proves the unrolled graph right. Loops
with an open trip count (an open sequence length), nested subgraphs or more steps than MAX_STEPS are left
as they are (the importer then refuses them, typed).
"""
from __future__ import annotations

from typing import Any

MAX_STEPS = 512  # copies of a body; beyond this, compile time and library size stop being reasonable


def unroll_loops(proto: Any) -> tuple[Any, list[int]]:
    """(the graph with every unrollable top-level Loop unrolled, the trip counts unrolled)."""
    from ..._onnx import constant_values

    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 13)

    graph = proto.graph
    consts = constant_values(graph)
    done: list[int] = []
    nodes: list[Any] = []
    added: list[Any] = []
    for index, node in enumerate(graph.node):
        steps = _trip_count(node, consts)
        if steps is None:
            nodes.append(node)
            continue
        new_nodes, new_inits = _unrolled(node, steps, f"{node.name or 'loop'}__u{index}", opset)
        nodes.extend(new_nodes)
        added.extend(new_inits)
        done.append(steps)
    if done:
        del graph.node[:]
        graph.node.extend(nodes)
        graph.initializer.extend(added)
    return proto, done


def _trip_count(node: Any, consts: dict[str, Any]) -> int | None:
    """The constant trip count of an unrollable Loop, or None."""
    if node.op_type != "Loop" or not node.input or not node.input[0] or node.input[0] not in consts:
        return None
    body = next(a.g for a in node.attribute if a.name == "body")
    if any(a.type in (5, 10) for n in body.node for a in n.attribute):  # GRAPH / GRAPHS: a nested subgraph
        return None
    value = consts[node.input[0]]
    if value.size != 1:
        return None
    steps = int(value.reshape(()))
    return steps if 1 <= steps <= MAX_STEPS else None


def _unrolled(node: Any, steps: int, prefix: str, opset: int) -> tuple[list[Any], list[Any]]:
    """The nodes and initializers that replace Loop `node` run `steps` times."""
    import numpy as np
    from onnx import helper, numpy_helper

    body = next(a.g for a in node.attribute if a.name == "body")
    carried = len(body.input) - 2
    out_nodes: list[Any] = []
    inits: list[Any] = []
    cond = node.input[1] if len(node.input) > 1 and node.input[1] else None
    current = list(node.input[2:2 + carried])
    scans: list[list[str]] = [[] for _ in range(len(body.output) - 1 - carried)]
    for t in range(steps):
        tag = f"{prefix}_{t}_"
        iteration = tag + "iter"
        inits.append(numpy_helper.from_array(np.array(t, np.int64), iteration))
        if cond is None:  # a Loop without a condition input: the body still reads one
            cond = tag + "cond"
            inits.append(numpy_helper.from_array(np.array(True), cond))
        rename = {body.input[0].name: iteration, body.input[1].name: cond}
        rename.update({b.name: c for b, c in zip(body.input[2:], current)})
        for init in body.initializer:
            copy = type(init)()
            copy.CopyFrom(init)
            copy.name = tag + init.name
            rename[init.name] = copy.name
            inits.append(copy)
        produced = {o for n in body.node for o in n.output if o}
        rename.update({o: tag + o for o in produced})
        for j, n in enumerate(body.node):
            copy = type(n)()
            copy.CopyFrom(n)
            copy.name = f"{tag}{j}_{n.name or n.op_type}"
            copy.input[:] = [rename.get(i, i) if i else i for i in n.input]
            copy.output[:] = [rename.get(o, o) if o else o for o in n.output]
            out_nodes.append(copy)
        outs = [rename.get(o.name, o.name) for o in body.output]
        cond = outs[0]
        current = outs[1:1 + carried]
        for k, name in enumerate(outs[1 + carried:]):
            scans[k].append(name)
    for final, value in zip(node.output[:carried], current):
        if final:
            out_nodes.append(helper.make_node("Identity", [value], [final], name=f"{prefix}_final_{final}"))
    axes = prefix + "_axes0"
    inits.append(numpy_helper.from_array(np.array([0], np.int64), axes))
    unsqueeze = (lambda name, out: helper.make_node("Unsqueeze", [name, axes], [out], name=out)) if opset >= 13 \
        else (lambda name, out: helper.make_node("Unsqueeze", [name], [out], axes=[0], name=out))
    for k, (final, names) in enumerate(zip(node.output[carried:], scans)):
        if not final:
            continue
        parts = []
        for t, name in enumerate(names):
            parts.append(f"{prefix}_scan{k}_{t}")
            out_nodes.append(unsqueeze(name, parts[-1]))
        out_nodes.append(helper.make_node("Concat", parts, [final], axis=0, name=f"{prefix}_scan{k}"))
    return out_nodes, inits


def reverse_sequences(proto: Any) -> tuple[Any, int]:
    """ReverseSequence (tf2onnx's backward direction of a masked RNN; TVM's importer has no such op) as a
    GatherElements along the time axis with per-row indices: step t of row b reads step len_b - 1 - t when
    t < len_b, else t (the padding stays where it is). Returns the graph and the number of nodes rewritten."""
    from onnx import helper

    graph = proto.graph
    nodes: list[Any] = []
    count = 0
    for index, node in enumerate(graph.node):
        if node.op_type != "ReverseSequence":
            nodes.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        new_nodes, inits = _gather_reversed(node.input[0], node.input[1], node.output[0],
                                            int(attrs.get("time_axis", 0)), f"{node.name or 'reverse'}__r{index}")
        nodes.extend(new_nodes)
        graph.initializer.extend(inits)
        count += 1
    if count:
        del graph.node[:]
        graph.node.extend(nodes)
    return proto, count


def _gather_reversed(x: str, lengths: str, out: str, time_axis: int, p: str) -> tuple[list[Any], list[Any]]:
    """The nodes (and constants) of one ReverseSequence rewritten; ONNX puts time and batch on axes 0 and 1."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    def c(name: str, value: Any) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value, np.int64), f"{p}_{name}"))
        return f"{p}_{name}"

    def n(op: str, inputs: list[str], name: str, **kw: Any) -> str:
        nodes.append(helper.make_node(op, inputs, [f"{p}_{name}"], name=f"{p}_{name}", **kw))
        return f"{p}_{name}"

    inits: list[Any] = []
    nodes: list[Any] = []
    shape = n("Shape", [x], "shape")
    steps = n("Range", [c("zero", 0), n("Gather", [shape, c("t_axis", time_axis)], "T", axis=0), c("one", 1)], "steps")
    t_col = n("Unsqueeze", [steps, c("axes1", [1])], "t_col")  # (T, 1) against lens (B,): a (T, B) grid
    lens = n("Cast", [lengths], "lens", to=TensorProto.INT64)
    inside = n("Less", [t_col, lens], "inside")
    mirrored = n("Sub", [n("Sub", [lens, f"{p}_one"], "last"), t_col], "mirrored")
    grid = n("Where", [inside, mirrored, n("Expand", [t_col, n("Shape", [inside], "plane")], "t_grid")], "idx_tb")
    if time_axis == 1:  # x is (batch, time, ...)
        grid = n("Transpose", [grid], "idx_bt", perm=[1, 0])
    rank_rest = n("Sub", [n("Size", [shape], "rank"), c("two", 2)], "rest")
    ones = n("ConstantOfShape", [n("Reshape", [rank_rest, c("flat", [1])], "rest1")], "ones",
             value=helper.make_tensor("one", TensorProto.INT64, [1], [1]))
    full = n("Reshape", [grid, n("Concat", [n("Shape", [grid], "grid_shape"), ones], "to_rank", axis=0)], "idx_full")
    index = n("Expand", [full, shape], "index")
    nodes.append(helper.make_node("GatherElements", [x, index], [out], axis=time_axis, name=f"{p}_gather"))
    return nodes, inits
