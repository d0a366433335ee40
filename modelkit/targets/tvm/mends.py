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
