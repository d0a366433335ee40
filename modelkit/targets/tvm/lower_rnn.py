"""ONNX recurrent ops and shape casts lowered for TVM 0.27's Relax importer, before import.

What the importer cannot take, rewritten in the graph (same numbers; the compiled library is
verified against the original ONNX model in onnxruntime like any hop, which is what proves them):

- **LSTM, GRU and RNN nodes** (tf2onnx fuses a Keras LSTM / Bidirectional LSTM into one; the importer has
  no such op) of a fixed sequence length: unrolled into MatMul / Add / Mul / Sigmoid / Tanh (/ Relu), one
  copy of the cell per step, forward and backward directions, either layout, peepholes, and the outputs Y,
  Y_h and Y_c. The input projection of every step is one MatMul; a missing initial state is zero (the first
  step drops its recurrent terms, so no batch-shaped zeros are needed). A node with an open length,
  per-row sequence lengths, clipping, coupled input-forget gates or other activations is left as it is,
  and `lower_rnns` says why (the importer then refuses it, typed, naming the op).
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
- **Whole-axis Slices** of a dynamic batch (`[0:INT_MAX]`, tf2onnx's gate slices): that axis is dropped from
  the Slice, so the batch stays the batch (`whole_axis_slices`).
"""
from __future__ import annotations

from typing import Any

from ..._onnx import opset_of
from .loops import MAX_STEPS

_ACTIVATIONS = {"Sigmoid", "Tanh", "Relu"}  # ONNX ops of the same name
_DEFAULTS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"], "RNN": ["Tanh"]}
_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
_SHAPE_OPS = {"Slice", "Gather", "Squeeze", "Unsqueeze", "Identity"}
WHOLE_AXIS_END = 10**9  # a Slice end at least this large keeps a whole axis (no batch is that large)


def lower_rnns(proto: Any) -> tuple[Any, list[str], list[str]]:
    """(the graph with every LSTM / GRU / RNN of a fixed length unrolled, the ops unrolled, why each other
    recurrent node was left)."""
    import onnx
    from onnx import helper, numpy_helper

    graph = proto.graph
    if not any(n.op_type in _GATES for n in graph.node):
        return proto, [], []
    shapes = _static_shapes(onnx.shape_inference.infer_shapes(proto))
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    opset = opset_of(proto) or 13
    nodes: list[Any] = []
    done: list[str] = []
    left: list[str] = []
    for index, node in enumerate(graph.node):
        if node.op_type not in _GATES:
            nodes.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        why = _why_not(node, attrs, shapes, inits)
        if why:
            left.append(f"{node.op_type} '{node.name or node.output[0]}': {why}")
            nodes.append(node)
            continue
        cell = _Builder(f"{node.name or node.op_type}__mk{index}", opset)
        _unroll(cell, node, attrs, shapes[node.input[0]], inits)
        nodes.extend(cell.nodes)
        graph.initializer.extend(cell.inits)
        done.append(node.op_type)
    if done:
        del graph.node[:]
        graph.node.extend(nodes)
    return proto, done, left


def _static_shapes(inferred: Any) -> dict[str, tuple[int | None, ...]]:
    g = inferred.graph
    out = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        dims = vi.type.tensor_type.shape.dim
        out[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)
    return out


def _why_not(node: Any, attrs: dict[str, Any], shapes: dict[str, tuple], inits: dict[str, Any]) -> str | None:
    """Why this recurrent node cannot be unrolled here, or None."""
    ins = list(node.input) + [""] * (8 - len(node.input))
    layout = int(attrs.get("layout", 0))
    shape = shapes.get(ins[0])
    steps = shape[layout] if shape and len(shape) == 3 else None
    acts = _activations(attrs)
    if steps is None:
        return "its sequence length is not fixed (fix it when converting from Keras: --input-spec)"
    if steps > MAX_STEPS:
        return f"{steps} steps (at most {MAX_STEPS} are unrolled)"
    if ins[4]:
        return "per-row sequence lengths (sequence_lens)"
    if any(k in attrs for k in ("clip", "activation_alpha", "activation_beta")) or attrs.get("input_forget"):
        return "clip / activation parameters / input_forget are not lowered"
    if any(a not in _ACTIVATIONS for a in acts):
        return f"activations {acts} (only {sorted(_ACTIVATIONS)} are lowered)"
    weights = [ins[1], ins[2]] + [i for i in (ins[3], ins[7]) if i]
    if any(w not in inits for w in weights):
        return "its weights are computed in the graph, not constants"
    return None


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _activations(attrs: dict[str, Any]) -> list[str]:
    """The node's `activations` attribute as str (onnx gives bytes)."""
    return [_text(a) for a in attrs.get("activations", [])]


class _Builder:
    """Nodes and constants under one name prefix."""

    def __init__(self, prefix: str, opset: int) -> None:
        self.p, self.opset, self.nodes, self.inits, self.count = prefix, opset, [], [], 0

    def const(self, value: Any, dtype: Any = None) -> str:
        import numpy as np
        from onnx import numpy_helper

        self.count += 1
        name = f"{self.p}_c{self.count}"
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def op(self, op_type: str, inputs: list[str], out: str | None = None, **kw: Any) -> str:
        from onnx import helper

        self.count += 1
        out = out or f"{self.p}_{op_type.lower()}{self.count}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=f"{self.p}_n{self.count}", **kw))
        return out

    def unsqueeze(self, x: str, axis: int, out: str | None = None) -> str:
        import numpy as np

        if self.opset >= 13:
            return self.op("Unsqueeze", [x, self.const([axis], np.int64)], out)
        return self.op("Unsqueeze", [x], out, axes=[axis])

    def slice_last(self, x: str, start: int, end: int) -> str:
        import numpy as np

        return self.op("Slice", [x, self.const([start], np.int64), self.const([end], np.int64),
                                 self.const([-1], np.int64)])


def _unroll(b: _Builder, node: Any, attrs: dict[str, Any], x_shape: tuple, inits: dict[str, Any]) -> None:
    """Emit the unrolled node: per direction, the input projection once, then one cell per step."""
    import numpy as np

    kind = node.op_type
    ins = list(node.input) + [""] * (8 - len(node.input))
    outs = list(node.output) + [""] * (3 - len(node.output))
    layout = int(attrs.get("layout", 0))
    hidden = int(attrs["hidden_size"])
    direction = _text(attrs.get("direction", b"forward"))
    dirs = 2 if direction == "bidirectional" else 1
    acts = _activations(attrs) or _DEFAULTS[kind] * dirs
    per = len(_DEFAULTS[kind])
    steps = x_shape[layout]
    gates = _GATES[kind]
    x = b.op("Transpose", [ins[0]], perm=[1, 0, 2]) if layout else ins[0]  # (T, N, I)
    init_h = b.op("Transpose", [ins[5]], perm=[1, 0, 2]) if layout and ins[5] else ins[5]  # (dirs, N, H)
    init_c = b.op("Transpose", [ins[6]], perm=[1, 0, 2]) if layout and ins[6] else ins[6]
    w, r = inits[ins[1]], inits[ins[2]]
    bias = inits[ins[3]] if ins[3] else np.zeros((dirs, 2 * gates * hidden), np.float32)
    peep = inits[ins[7]] if ins[7] else None
    ys, hs, cs = [], [], []
    for d in range(dirs):
        reverse = direction == "reverse" or d == 1
        wb, rb = bias[d][:gates * hidden], bias[d][gates * hidden:]
        in_bias = wb + rb
        if kind == "GRU" and int(attrs.get("linear_before_reset", 0)):
            in_bias[2 * hidden:] = wb[2 * hidden:]  # Rb_h stays inside r * (h R_h + Rb_h)
        xw = b.op("Add", [b.op("MatMul", [x, b.const(w[d].T.copy(), w.dtype)]), b.const(in_bias, w.dtype)])
        h = b.op("Gather", [init_h, b.const(d, np.int64)], axis=0) if init_h else None
        c = b.op("Gather", [init_c, b.const(d, np.int64)], axis=0) if init_c else None
        rt = b.const(r[d].T.copy(), r.dtype)
        a = acts[d * per:(d + 1) * per]
        seq: dict[int, str] = {}
        for t in (range(steps - 1, -1, -1) if reverse else range(steps)):
            xt = b.op("Gather", [xw, b.const(t, np.int64)], axis=0)  # (N, gates * H)
            if kind == "LSTM":
                h, c = _lstm_cell(b, xt, h, c, rt, peep[d] if peep is not None else None, hidden, a)
            elif kind == "GRU":
                h = _gru_cell(b, xt, h, r[d], rb, hidden, a, int(attrs.get("linear_before_reset", 0)))
            else:
                rec = b.op("MatMul", [h, rt]) if h else None
                h = b.op(a[0], [b.op("Add", [xt, rec]) if rec else xt])
            seq[t] = h
        ys.append(b.op("Concat", [b.unsqueeze(seq[t], 0) for t in range(steps)], axis=0))  # (T, N, H)
        hs.append(h)
        cs.append(c)
    _outputs(b, outs, ys, hs, cs, layout)


def _lstm_cell(b: _Builder, xt: str, h: str | None, c: str | None, rt: str, peep: Any, hidden: int,
               a: list[str]) -> tuple[str, str]:
    """ONNX LSTM gate order i, o, f, c; peepholes P = [p_i, p_o, p_f]."""
    g = b.op("Add", [xt, b.op("MatMul", [h, rt])]) if h else xt
    i, o, f, z = (b.slice_last(g, k * hidden, (k + 1) * hidden) for k in range(4))
    if peep is not None and c:
        i = b.op("Add", [i, b.op("Mul", [c, b.const(peep[:hidden], peep.dtype)])])
        f = b.op("Add", [f, b.op("Mul", [c, b.const(peep[2 * hidden:], peep.dtype)])])
    new = b.op("Mul", [b.op(a[0], [i]), b.op(a[1], [z])])
    if c:
        new = b.op("Add", [b.op("Mul", [b.op(a[0], [f]), c]), new])
    if peep is not None:
        o = b.op("Add", [o, b.op("Mul", [new, b.const(peep[hidden:2 * hidden], peep.dtype)])])
    return b.op("Mul", [b.op(a[0], [o]), b.op(a[2], [new])]), new


def _gru_cell(b: _Builder, xt: str, h: str | None, r: Any, rb: Any, hidden: int, a: list[str], lbr: int) -> str:
    """ONNX GRU gate order z, r, h; xt holds X W^T + Wb (+ Rb for z and r, and for h unless lbr)."""
    xz, xr, xh = (b.slice_last(xt, k * hidden, (k + 1) * hidden) for k in range(3))
    if h is None:  # the first step of a zero state: the recurrent products vanish, Rb_h stays
        z, rg = b.op(a[0], [xz]), b.op(a[0], [xr])
        cand = b.op("Add", [xh, b.op("Mul", [rg, b.const(rb[2 * hidden:])])]) if lbr else xh
        return b.op("Mul", [b.op("Sub", [b.const(1.0, r.dtype), z]), b.op(a[1], [cand])])
    hz = b.op("MatMul", [h, b.const(r[:2 * hidden].T.copy(), r.dtype)])
    z = b.op(a[0], [b.op("Add", [xz, b.slice_last(hz, 0, hidden)])])
    rg = b.op(a[0], [b.op("Add", [xr, b.slice_last(hz, hidden, 2 * hidden)])])
    rh = b.const(r[2 * hidden:].T.copy(), r.dtype)
    if lbr:
        rec = b.op("Mul", [rg, b.op("Add", [b.op("MatMul", [h, rh]), b.const(rb[2 * hidden:])])])
    else:
        rec = b.op("MatMul", [b.op("Mul", [rg, h]), rh])
    cand = b.op(a[1], [b.op("Add", [xh, rec])])
    keep = b.op("Mul", [z, h])
    return b.op("Add", [b.op("Mul", [b.op("Sub", [b.const(1.0, r.dtype), z]), cand]), keep])


def _outputs(b: _Builder, outs: list[str], ys: list[str], hs: list[str], cs: list[str | None], layout: int) -> None:
    """Y (T, dirs, N, H), Y_h and Y_c (dirs, N, H); batch first for layout 1."""
    y_name, h_name, c_name = outs
    if y_name:
        y = b.op("Concat", [b.unsqueeze(v, 1) for v in ys], axis=1)
        if layout:
            b.op("Transpose", [y], y_name, perm=[2, 0, 1, 3])
        else:
            b.op("Identity", [y], y_name)
    for name, values in ((h_name, hs), (c_name, cs)):
        if not name:
            continue
        stacked = b.op("Concat", [b.unsqueeze(v, 0) for v in values if v], axis=0)
        if layout:
            b.op("Transpose", [stacked], name, perm=[1, 0, 2])
        else:
            b.op("Identity", [stacked], name)


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


__all__ = ["lower_rnns", "symbolic_batch", "shape_casts", "shape_gathers", "whole_axis_slices"]
