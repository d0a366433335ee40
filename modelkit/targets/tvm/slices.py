"""Slice bounds computed at run time from an open dimension, made constant for TVM 0.27's importer.

tf2onnx writes a Keras Conv1DTranspose / Conv2DTranspose with `padding="same"` over an open size as a VALID
ConvTranspose followed by a Slice whose starts and ends it computes from the input's shape
(`Shape -> Slice -> Sub -> Div -> Concat`): the full output ((L - 1) * s + k) cropped to L * s. The importer takes
no arithmetic on shape values ("Node Sub cannot handle ShapeExpr inputs"), so such a model was refused at an open
length. Yet the crop is a constant distance from each end ((k - s) // 2 at the start, the rest at the end). Where
tf2onnx also pads that output (`Pad` with pads `max(desired - full, 0)`, computed), the pads are the same at every
size (zeros).

The starts and ends are read by running the graph in onnxruntime at reshapes.PROBES, with the Slice's input
shape: a bound that is the same at every probe is kept, one at a constant distance from the end of its axis
becomes that negative index (or "to the end"), and anything else is left as it is. The library is verified
against the original ONNX model at other sizes like any hop, which is what proves the constant bounds.
"""
from __future__ import annotations

from typing import Any

TO_THE_END = 2**63 - 1


def constant_slices(proto: Any) -> tuple[Any, int]:
    """(the graph with each Slice whose starts / ends are computed given constant bounds, and each Pad whose computed
    pads are the same at every probe given those, how many); unchanged (and 0) when there is none, a Slice's axes or
    steps are computed, or onnxruntime cannot run the probe."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from ..._onnx import constant_values, slim
    from .reshapes import probe_values, shape_derived

    graph = proto.graph
    consts = constant_values(graph)
    producers = {o: n for n in graph.node for o in n.output}

    def from_shapes(*names: str) -> bool:  # a bound computed from the data's values is left (reshapes.py)
        return all(shape_derived(t, producers, set(consts)) for t in names)

    computed = [n for n in graph.node if n.op_type == "Slice" and len(n.input) >= 3
                and (n.input[1] not in consts or n.input[2] not in consts)
                and all(i in consts for i in n.input[3:] if i) and from_shapes(n.input[1], n.input[2])]
    pads = [n for n in graph.node if n.op_type == "Pad" and len(n.input) >= 2 and n.input[1] not in consts
            and from_shapes(n.input[1])]
    if not computed and not pads:
        return proto, 0
    names = list(dict.fromkeys([t for n in computed for t in (n.input[0], n.input[1], n.input[2])]
                               + [n.input[1] for n in pads]))
    values = probe_values(proto, names)
    if values is None:
        return proto, 0
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    count = 0
    todo = {n.output[0] for n in computed}
    for node in out.graph.node:
        computed_pads = node.op_type == "Pad" and len(node.input) > 1 and node.input[1] not in consts
        seen = values.get(node.input[1]) if computed_pads else None
        if seen and all(np.array_equal(v, seen[0]) for v in seen):  # pads the same at every size
            name = f"{node.output[0]}__pads"
            out.graph.initializer.append(numpy_helper.from_array(np.asarray(seen[0], np.int64), name))
            node.input[1] = name
            count += 1
        if node.op_type != "Slice" or node.output[0] not in todo:
            continue
        bounds = _bounds(node, values, consts)
        if bounds is None:
            continue
        for slot, (kind, bound) in zip((1, 2), zip(("starts", "ends"), bounds)):
            name = f"{node.output[0]}__{kind}"
            out.graph.initializer.append(numpy_helper.from_array(np.array(bound, np.int64), name))
            node.input[slot] = name
        count += 1
    return (slim(out), count) if count else (proto, 0)  # onnxslim drops the arithmetic no node reads now


def _bounds(node: Any, values: dict[str, list[Any]], consts: dict[str, Any]) -> tuple[list[int], list[int]] | None:
    """Constant (starts, ends) equal to the probed ones at every probe, or None."""
    import numpy as np

    data_shapes = [np.shape(v) for v in values[node.input[0]]]
    starts = [np.asarray(v).reshape(-1).tolist() for v in values[node.input[1]]]
    ends = [np.asarray(v).reshape(-1).tolist() for v in values[node.input[2]]]
    rank = len(data_shapes[0])
    axes_in = node.input[3] if len(node.input) > 3 and node.input[3] else None
    axes = [int(a) % rank for a in consts[axes_in].reshape(-1)] if axes_in else list(range(len(starts[0])))
    steps_in = node.input[4] if len(node.input) > 4 and node.input[4] else None
    if steps_in and any(int(s) != 1 for s in consts[steps_in].reshape(-1)):
        return None
    if len({len(s) for s in starts + ends}) != 1 or len(starts[0]) != len(axes):
        return None
    fixed_starts, fixed_ends = [], []
    for j, axis in enumerate(axes):
        sizes = [shape[axis] for shape in data_shapes]
        start = _fixed([_clamp(s[j], n) for s, n in zip(starts, sizes)], sizes, end=False)
        end = _fixed([_clamp(e[j], n) for e, n in zip(ends, sizes)], sizes, end=True)
        if start is None or end is None:
            return None
        fixed_starts.append(start)
        fixed_ends.append(end)
    return fixed_starts, fixed_ends


def _clamp(bound: int, size: int) -> int:
    """A Slice bound as the position it means on an axis of `size` (negative from the end, clamped)."""
    return min(max(bound + size if bound < 0 else bound, 0), size)


def _fixed(positions: list[int], sizes: list[int], end: bool) -> int | None:
    """One bound meaning `positions` on axes of `sizes`: a position the same at each, or a constant distance from the
    end (negative; the end itself: TO_THE_END); None otherwise."""
    if len(set(positions)) == 1 and (len(set(sizes)) == 1 or positions[0] < min(sizes)):
        return positions[0]
    back = {p - n for p, n in zip(positions, sizes)}
    if len(back) == 1:
        (distance,) = back
        return TO_THE_END if distance == 0 and end else distance if distance < 0 else None
    return None
