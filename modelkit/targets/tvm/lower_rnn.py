"""ONNX recurrent ops lowered for TVM 0.27's Relax importer, before import.

What the importer cannot take, rewritten in the graph (same numbers; the compiled library is
verified against the original ONNX model in onnxruntime like any hop, which is what proves them):

- **LSTM, GRU and RNN nodes** (tf2onnx fuses a Keras LSTM / Bidirectional LSTM into one; the importer has
  no such op) of a fixed sequence length: unrolled into MatMul / Add / Mul / Sigmoid / Tanh (/ Relu), one
  copy of the cell per step, forward and backward directions, either layout, peepholes, and the outputs Y,
  Y_h and Y_c. The input projection of every step is one MatMul; a missing initial state is zero (the first
  step drops its recurrent terms, so no batch-shaped zeros are needed). A length shape inference does not reach
  is read by onnxruntime (_probed_lengths). A node with an open length,
  per-row sequence lengths, clipping, coupled input-forget gates or other activations is left as it is,
  and `lower_rnns` says why (the importer then refuses it, typed, naming the op).

The rewrites that keep a dynamic batch symbolic around them (shape casts, gathers, whole-axis slices) are in
symbolic.py.
"""
from __future__ import annotations

from typing import Any

from ..._onnx import opset_of
from .loops import MAX_STEPS

_ACTIVATIONS = {"Sigmoid", "Tanh", "Relu"}  # ONNX ops of the same name
_DEFAULTS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"], "RNN": ["Tanh"]}
_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def lower_rnns(proto: Any) -> tuple[Any, list[str], list[str]]:
    """(the graph with every LSTM / GRU / RNN of a fixed length unrolled, the ops unrolled, why each other
    recurrent node was left)."""
    import onnx
    from onnx import helper, numpy_helper

    graph = proto.graph
    if not any(n.op_type in _GATES for n in graph.node):
        return proto, [], []
    shapes = _probed_lengths(proto, _static_shapes(onnx.shape_inference.infer_shapes(proto)))
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


def _probed_lengths(proto: Any, shapes: dict[str, tuple[int | None, ...]]) -> dict[str, tuple[int | None, ...]]:
    """`shapes`, with the input of each recurrent node whose length shape inference did not reach read by
    onnxruntime instead (reshapes.probe_shapes, at its PROBES), where that length is the same at each: an int8
    graph's QDQ pairs stop ONNX's inference between a RepeatVector's Tile and the decoder LSTM (nc37), though the
    float graph's length is fixed."""
    from .reshapes import probe_shapes

    def steps(node: Any) -> int | None:
        layout = next((a.i for a in node.attribute if a.name == "layout"), 0)
        shape = shapes.get(node.input[0])
        return shape[layout] if shape and len(shape) == 3 else None

    open_ = [n.input[0] for n in proto.graph.node if n.op_type in _GATES and steps(n) is None]
    probed = probe_shapes(proto, open_) if open_ else None
    for name, seen in (probed or {}).items():
        if len({len(s) for s in seen}) == 1 and len(seen[0]) == 3:  # one axis may follow the batch, the length not
            shapes[name] = tuple(d if all(s[a] == d for s in seen) else None for a, d in enumerate(seen[0]))
    return shapes


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


__all__ = ["lower_rnns"]
