"""ONNX graph mends for TVM 0.27's ONNX importer: exporter patterns (tf2onnx's) it rejects or mistypes, rewritten
before import into graphs of the same numbers. Recurrent nodes, loops, the batch's symbolic shape and
batch-computed Reshape targets have their own modules (lower_rnn.py, loops.py, symbolic.py, reshapes.py)."""
from __future__ import annotations

from typing import Any


def mend_onehot(proto: Any) -> Any:
    """Two TVM importer bugs with ONNX OneHot (a Keras CategoryEncoding), fixed in the graph: `depth` as the
    scalar the spec describes (tf2onnx writes a one-element tensor, which the importer passes on as an
    array where relax.one_hot wants an int), and a Cast to the `values` dtype after it (the importer
    makes float64 of float32 values, and a Concat with float32 tensors then fails). Same numbers."""
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in proto.graph.initializer}
    nodes = []
    for node in proto.graph.node:
        nodes.append(node)
        if node.op_type != "OneHot" or len(node.input) < 3:
            continue
        depth, values = inits.get(node.input[1]), inits.get(node.input[2])
        if depth is not None and list(depth.dims) == [1]:
            depth.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(depth).reshape(()), depth.name))
        if values is not None:
            out = node.output[0]
            node.output[0] = f"{out}__modelkit_onehot"
            nodes.append(helper.make_node("Cast", [node.output[0]], [out], to=values.data_type,
                                          name=f"{node.name}__modelkit_cast"))
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    return proto


def mend_resize(proto: Any) -> Any:
    """Two limits of TVM's importer with ONNX Resize, met by any Keras Resizing layer on an input of open height
    and width (tf2onnx writes Resize(x, roi, scales, sizes) with `scales` an empty tensor and `sizes` computed as
    Concat(Slice(Shape(x), 0, 2), [h, w])): an empty `scales` counts as given ("Only one of scales and sizes"),
    and a computed `sizes` is refused although the importer reads only its spatial entries. An empty `scales`
    becomes an absent input, and a `sizes` whose spatial entries are a constant becomes that constant (its first
    two entries x's own batch and channels, as the Slice of x's shape says). Same numbers."""
    import numpy as np
    from onnx import numpy_helper

    inits = {i.name: i for i in proto.graph.initializer}
    producers = {o: n for n in proto.graph.node for o in n.output}
    added = []
    for node in proto.graph.node:
        if node.op_type != "Resize" or len(node.input) < 4 or not node.input[3]:
            continue
        scales = inits.get(node.input[2])
        if scales is not None and numpy_helper.to_array(scales).size == 0:
            node.input[2] = ""
        spatial = _constant_spatial_sizes(node, producers, inits)
        if spatial is not None:
            name = f"{node.name or node.output[0]}__modelkit_sizes"
            added.append(numpy_helper.from_array(np.array([1, 1, *spatial], np.int64), name))
            node.input[3] = name
    proto.graph.initializer.extend(added)
    return proto


def _constant_spatial_sizes(node: Any, producers: dict[str, Any], inits: dict[str, Any]) -> list[int] | None:
    """The constant [h, w, ...] of a Resize `sizes` computed as Concat(Slice(Shape(x), 0, 2), constant), else
    None (an initializer already, or another computation)."""
    from onnx import numpy_helper

    concat = producers.get(node.input[3])
    if concat is None or concat.op_type != "Concat" or len(concat.input) != 2:
        return None
    head, tail = producers.get(concat.input[0]), inits.get(concat.input[1])
    if tail is None or head is None or head.op_type != "Slice" or len(head.input) < 3:
        return None
    shape = producers.get(head.input[0])
    starts, ends = inits.get(head.input[1]), inits.get(head.input[2])
    if shape is None or shape.op_type != "Shape" or shape.input[0] != node.input[0] or starts is None or ends is None:
        return None
    if numpy_helper.to_array(starts).tolist() != [0] or numpy_helper.to_array(ends).tolist() != [2]:
        return None
    return [int(v) for v in numpy_helper.to_array(tail).reshape(-1)]


def mend_picked_slices(proto: Any) -> tuple[Any, int]:
    """(the graph with each `Squeeze(Slice(x, [i:i+1] or [-1:]), axis)` -- tf2onnx's `x[:, -1]`, a sequence's
    last step -- written as `Gather(x, i, axis)`, how many). On an open axis the importer gives the Slice an
    extent it cannot prove to be 1 and refuses the Squeeze ("Squeeze axis 1 has a symbolic extent"); its Gather
    takes a negative index from the end. Only where every other axis the Slice names is kept whole (start 0,
    end past any size, step 1). Same numbers."""
    import numpy as np
    from onnx import helper, numpy_helper

    from ..._onnx import constant_values
    from .reshapes import graph_readers
    from .symbolic import WHOLE_AXIS_END

    graph = proto.graph
    consts = constant_values(graph)
    producers = {o: n for n in graph.node for o in n.output}
    readers = graph_readers(graph)
    dropped, added, count = set(), [], 0
    for node in graph.node:
        axes = _squeeze_axes(node, consts)
        source = producers.get(node.input[0]) if axes is not None and len(axes) == 1 else None
        index = _picked_index(source, axes[0], consts, WHOLE_AXIS_END) if source is not None else None
        if index is None:
            continue
        name = f"{node.name or node.output[0]}__modelkit_index"
        added.append(numpy_helper.from_array(np.array(index, np.int64), name))
        gather = helper.make_node("Gather", [source.input[0], name], list(node.output), axis=axes[0],
                                  name=f"{node.name or node.output[0]}__modelkit_gather")
        node.CopyFrom(gather)
        if len(readers.get(source.output[0], [])) == 1 and source.output[0] not in {o.name for o in graph.output}:
            dropped.add(id(source))
        count += 1
    if count:
        kept = [n for n in graph.node if id(n) not in dropped]
        del graph.node[:]
        graph.node.extend(kept)
        graph.initializer.extend(added)
    return proto, count


def _squeeze_axes(node: Any, consts: dict[str, Any]) -> list[int] | None:
    """A Squeeze's constant axes (input from opset 13, attribute before), else None."""
    if node.op_type != "Squeeze":
        return None
    if len(node.input) > 1:
        value = consts.get(node.input[1])
        return None if value is None else [int(a) for a in value.reshape(-1)]
    return next((list(a.ints) for a in node.attribute if a.name == "axes"), None)


def _picked_index(node: Any, axis: int, consts: dict[str, Any], whole_end: int) -> int | None:
    """The one position a constant Slice keeps on `axis` (i for [i:i+1], -1 for [-1:]), when it keeps every
    other axis it names whole; else None."""
    params = list(node.input[1:5])
    if node.op_type != "Slice" or len(params) < 3 or not params[2] or not all(p in consts for p in params if p):
        return None
    starts, ends, axes = (consts[p].reshape(-1).tolist() for p in params[:3])
    steps = consts[params[3]].reshape(-1).tolist() if len(params) > 3 and params[3] else [1] * len(axes)
    index = None
    for start, end, ax, step in zip(starts, ends, axes, steps):
        if ax != axis:
            if not (start == 0 and end >= whole_end and step == 1):
                return None
        elif step == 1 and (end == start + 1 and start != -1 or start == -1 and end >= whole_end):
            index = int(start)
        else:
            return None
    return index
