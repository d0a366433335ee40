"""Pure-Python, bounds-checked validation of a .tflite flatbuffer (no TensorFlow): `check_tflite(data)`.

ai-edge-litert verifies the flatbuffer's layout but trusts its content, so this refuses, as a LoadError
naming what is wrong: a missing "TFL3" identifier, any buffer / tensor / opcode / subgraph / signature
index out of range, operator inputs and outputs that are not tensors of the subgraph (-1 only for optional
inputs), input / output counts, index-input dtypes and options that do not fit the operator (a table of the
ops converters emit, each rule found by structure-aware fuzzing), control flow naming missing subgraphs or
itself, shapes with negative dims or rank > 16, constant data shorter than shape x dtype. External weight
files (external buffer groups) are refused as UnsafeModelError. modelkit.safety.tflite adds the sandboxed
first open.
"""
from __future__ import annotations

import math
import os
import struct
from typing import Any

from ai_edge_litert import schema_py_generated as _schema  # enums only; the reader below is bounds-checked

from ..errors import LoadError, UnsafeModelError

MAX_RANK = 16
_OPS = {v: k for k, v in vars(_schema.BuiltinOperator).items() if not k.startswith("_")}
_OPT_NAMES = {v: k for k, v in vars(_schema.BuiltinOptions).items() if not k.startswith("_")}
_OPT_BY_KEY = {k[:-7].replace("_", "").lower(): v for v, k in _OPT_NAMES.items() if k.endswith("Options")}
# the options union member the parser reads for each op (named after it: CONV_2D -> Conv2DOptions)
_OPTIONS = {c: _OPT_BY_KEY[k] for c, k in ((c, n.replace("_", "").lower()) for c, n in _OPS.items())
            if k in _OPT_BY_KEY}
_T = {k: v for k, v in vars(_schema.TensorType).items() if not k.startswith("_")}
# bytes per element (None: variable size); types newer than this table are refused
_SIZES = {0: 4, 1: 2, 2: 4, 3: 1, 4: 8, 5: None, 6: 1, 7: 2, 8: 8, 9: 1, 10: 8, 11: 16, 12: 8, 13: None,
          14: None, 15: 4, 16: 2, 17: 0.5, 18: 2, 19: 0.25, 20: 0.5, 21: 1, 22: 1}
_NON_NUMERIC = {_T["STRING"], _T["BOOL"], _T["RESOURCE"], _T["VARIANT"]}
_INT = frozenset({_T["INT32"], _T["INT64"]})
_I32 = frozenset({_T["INT32"]})
# min inputs, max inputs, min outputs, max outputs ('*': any number) of the builtin ops converters emit
_COUNT_SPEC = """
1 1 1 1: ABS CAST CEIL COS DENSIFY DEPTH_TO_SPACE DEQUANTIZE ELU EXP FLOOR GELU HARD_SWISH L2_NORMALIZATION
  L2_POOL_2D LEAKY_RELU LOCAL_RESPONSE_NORMALIZATION LOG LOG_SOFTMAX LOGICAL_NOT LOGISTIC NEG QUANTIZE RANK RELU
  RELU6 RELU_0_TO_1 RELU_N1_TO_1 ROUND RSQRT SHAPE SIGN SIN SOFTMAX SPACE_TO_DEPTH SQRT SQUARE SQUEEZE TANH WHERE
  ZEROS_LIKE AVERAGE_POOL_2D MAX_POOL_2D BUCKETIZE READ_VARIABLE
2 2 1 1: ADD SUB MUL DIV SQUARED_DIFFERENCE POW MAXIMUM MINIMUM FLOOR_DIV FLOOR_MOD LESS LESS_EQUAL GREATER
  GREATER_EQUAL EQUAL NOT_EQUAL LOGICAL_AND LOGICAL_OR PRELU BATCH_MATMUL TRANSPOSE EXPAND_DIMS GATHER GATHER_ND
  TILE BROADCAST_TO FILL ARG_MAX ARG_MIN MEAN SUM REDUCE_MAX REDUCE_MIN REDUCE_PROD REDUCE_ANY REDUCE_ALL
  RESIZE_BILINEAR RESIZE_NEAREST_NEIGHBOR MIRROR_PAD CUMSUM EMBEDDING_LOOKUP ATAN2 REVERSE_V2 SEGMENT_SUM
3 3 1 1: CONV_2D DEPTHWISE_CONV_2D
2 3 1 1: CONV_3D PAD PADV2
1 2 1 1: RESHAPE
2 3 1 2: FULLY_CONNECTED
3 4 1 1: TRANSPOSE_CONV
3 3 1 1: SLICE SELECT SELECT_V2 SPACE_TO_BATCH_ND BATCH_TO_SPACE_ND SCATTER_ND RANGE UNSORTED_SEGMENT_PROD
  UNSORTED_SEGMENT_SUM UNSORTED_SEGMENT_MAX UNSORTED_SEGMENT_MIN
4 4 1 1: STRIDED_SLICE ONE_HOT
2 2 1 *: SPLIT
3 3 1 *: SPLIT_V
1 1 1 *: UNPACK
1 * 1 1: CONCATENATION PACK ADD_N
2 2 2 2: TOPK_V2
20 24 1 1: UNIDIRECTIONAL_SEQUENCE_LSTM
2 2 0 0: ASSIGN_VARIABLE
1 * 0 *: IF
"""
_COUNTS: dict[int, tuple[int, float, int, float]] = {}
for _line in _COUNT_SPEC.replace("\n  ", " ").strip().splitlines():
    _spec, _names = _line.split(":")
    _n = tuple(math.inf if x == "*" else int(x) for x in _spec.split())
    _COUNTS.update({c: _n for c, name in _OPS.items() if name in _names.split()})
# inputs that are indices, axes or shapes: their dtypes, by op and input position
_INDEX_INPUTS = {"SPLIT": {0: _I32}, "SPLIT_V": {1: _INT, 2: _I32}, "RESHAPE": {1: _INT}, "TRANSPOSE": {1: _INT},
                 "EXPAND_DIMS": {1: _INT}, "GATHER": {1: _INT | {_T["INT16"]}}, "GATHER_ND": {1: _INT | {_T["INT16"]}},
                 "PAD": {1: _INT}, "PADV2": {1: _INT}, "MIRROR_PAD": {1: _INT}, "TILE": {1: _INT},
                 "BROADCAST_TO": {1: _INT}, "FILL": {0: _INT}, "ARG_MAX": {1: _INT}, "ARG_MIN": {1: _INT},
                 "STRIDED_SLICE": {1: _INT, 2: _INT, 3: _INT}, "SLICE": {1: _INT, 2: _INT},
                 "RESIZE_BILINEAR": {1: _I32}, "RESIZE_NEAREST_NEIGHBOR": {1: _I32},
                 "SPACE_TO_BATCH_ND": {1: _I32, 2: _I32}, "BATCH_TO_SPACE_ND": {1: _I32, 2: _I32},
                 "TOPK_V2": {1: _I32}, "ONE_HOT": {1: _I32},
                 "SELECT": {0: frozenset({_T["BOOL"]})}, "SELECT_V2": {0: frozenset({_T["BOOL"]})},
                 "TRANSPOSE_CONV": {0: _I32}, "CUMSUM": {1: _I32}, "EMBEDDING_LOOKUP": {0: _I32},
                 **{r: {1: _INT} for r in "MEAN SUM REDUCE_MAX REDUCE_MIN REDUCE_PROD REDUCE_ANY REDUCE_ALL".split()}}
# ops that copy or combine their data inputs (positions; None: all) into outputs of the same type: another
# type would overflow the output (RESHAPE float32 -> int8 copies 4x the bytes into its output: heap corruption)
_SAME_TYPE = {**{n: (0,) for n in "RESHAPE SQUEEZE EXPAND_DIMS TRANSPOSE UNPACK SPLIT_V STRIDED_SLICE SLICE GATHER "
                 "GATHER_ND TILE PAD MIRROR_PAD MAX_POOL_2D AVERAGE_POOL_2D BROADCAST_TO REVERSE_V2 SPACE_TO_DEPTH "
                 "DEPTH_TO_SPACE SPACE_TO_BATCH_ND BATCH_TO_SPACE_ND RESIZE_BILINEAR RESIZE_NEAREST_NEIGHBOR "
                 "ZEROS_LIKE CONV_2D DEPTHWISE_CONV_2D RELU RELU6 TANH LOGISTIC".split()},
              "SPLIT": (1,), "PADV2": (0, 2), "SELECT": (1, 2), "SELECT_V2": (1, 2), "CONCATENATION": None,
              "PACK": None, "ADD": (0, 1), "SUB": (0, 1), "MUL": (0, 1), "MAXIMUM": (0, 1), "MINIMUM": (0, 1)}
# ops whose every tensor is a number (never a string, bool, resource or variant)
_NUMERIC = set("ADD SUB MUL DIV CONV_2D DEPTHWISE_CONV_2D CONV_3D FULLY_CONNECTED TRANSPOSE_CONV BATCH_MATMUL "
               "SOFTMAX LOG_SOFTMAX LOGISTIC TANH RELU RELU6 AVERAGE_POOL_2D MAX_POOL_2D L2_NORMALIZATION HARD_SWISH "
               "GELU PRELU LEAKY_RELU MEAN SUM SQUARED_DIFFERENCE".split())
# inputs that may be -1 (absent) for the ops of the table above (None: any; an op not in the table: any)
_OPTIONAL = {"FULLY_CONNECTED": {2}, "CONV_2D": {2}, "DEPTHWISE_CONV_2D": {2}, "CONV_3D": {2}, "TRANSPOSE_CONV": {3},
             "UNIDIRECTIONAL_SEQUENCE_LSTM": None}
# ops whose options say how many outputs they have (options union member, slot)
_NUM_OUTPUTS = {"SPLIT": ("SplitOptions", 0), "SPLIT_V": ("SplitVOptions", 0), "UNPACK": ("UnpackOptions", 0)}
# control flow: options union member, the slots naming subgraphs
_CALLS = {"WHILE": ("WhileOptions", (0, 1)), "IF": ("IfOptions", (0, 1)), "CALL_ONCE": ("CallOnceOptions", (0,)),
          "CALL": ("CallOptions", (0,))}


class _Corrupt(Exception):
    pass


class _Unsafe(Exception):
    pass


class _Table:
    """A flatbuffer table whose every read is bounds-checked (a _Corrupt error instead of garbage)."""

    def __init__(self, d: bytes, pos: int, budget: list[int]):
        self.d, self.pos, self.budget = d, pos, budget  # budget: elements left to visit (shared tables)
        self.vt = pos - self._get("i", pos)
        self.vtlen, self.objlen = self._get("H", self.vt), self._get("H", self.vt + 2)
        if self.vtlen < 4 or self.vtlen % 2:
            raise _Corrupt(f"a table at byte {pos} has a corrupt vtable")
        self._need(self.vt, self.vtlen)
        self._need(pos, self.objlen)

    def _need(self, pos: int, size: int) -> None:
        if pos < 0 or pos + size > len(self.d):
            raise _Corrupt(f"an offset points outside the file ({pos} + {size} > {len(self.d)} bytes)")

    def _get(self, fmt: str, pos: int) -> Any:
        self._need(pos, struct.calcsize(fmt))
        return struct.unpack_from("<" + fmt, self.d, pos)[0]

    def _field(self, slot: int, size: int) -> int:
        at = 4 + 2 * slot
        rel = self._get("H", self.vt + at) if at + 2 <= self.vtlen else 0
        if rel and rel + size > self.objlen:
            raise _Corrupt(f"a field of the table at byte {self.pos} lies outside it")
        return self.pos + rel if rel else 0

    def num(self, slot: int, fmt: str) -> int:
        p = self._field(slot, struct.calcsize(fmt))
        return self._get(fmt, p) if p else 0

    def _ref(self, slot: int) -> int:
        p = self._field(slot, 4)
        return p + self._get("I", p) if p else 0

    def table(self, slot: int) -> _Table | None:
        p = self._ref(slot)
        return _Table(self.d, p, self.budget) if p else None

    def vec(self, slot: int, size: int) -> tuple[int, int]:
        p = self._ref(slot)
        n = self._get("I", p) if p else 0
        self._need(p + 4, n * size)
        return p + 4, n

    def _spend(self, n: int) -> None:
        self.budget[0] -= n
        if self.budget[0] < 0:
            raise _Corrupt("its tables are shared so many times that reading them would not end")

    def ints(self, slot: int, fmt: str = "i") -> list[int]:
        start, n = self.vec(slot, struct.calcsize(fmt))
        self._spend(n)
        return list(struct.unpack_from(f"<{n}{fmt}", self.d, start))

    def tables(self, slot: int) -> list[_Table]:
        start, n = self.vec(slot, 4)
        self._spend(n)
        return [_Table(self.d, start + 4 * i + self._get("I", start + 4 * i), self.budget) for i in range(n)]

    def string(self, slot: int) -> str | None:
        start, n = self.vec(slot, 1)
        return bytes(self.d[start:start + n]).decode("utf-8", "replace") if n else None


def check_tflite(data: bytes, path: str | os.PathLike = "<bytes>") -> None:
    """Refuse a .tflite whose flatbuffer is malformed or inconsistent (LoadError naming what is wrong)."""
    if len(data) < 8 or bytes(data[4:8]) != b"TFL3":
        raise LoadError(f"{path}: not a TFLite flatbuffer (no 'TFL3' identifier)")
    try:
        _check_model(_Table(data, struct.unpack_from("<I", data)[0], [len(data) // 2 + 10_000]), len(data))
    except _Corrupt as exc:
        raise LoadError(f"{path}: not a valid TFLite model: {exc}") from None
    except _Unsafe as exc:
        raise UnsafeModelError(f"{path}: refused to load: {exc}") from None


def _check_model(root: _Table, size: int) -> None:
    codes = []
    for i, oc in enumerate(root.tables(1)):
        code = max(oc.num(0, "b"), oc.num(3, "i"))
        if code not in _OPS or _OPS[code] == "PLACEHOLDER_FOR_GREATER_OP_CODES":
            raise _Corrupt(f"operator code {i} is {code}, not a builtin operator")
        if _OPS[code] == "CUSTOM" and not oc.string(1):
            raise _Corrupt(f"operator code {i} is a custom operator without a name")
        codes.append(code)
    sizes = []
    for i, b in enumerate(root.tables(4)):
        nbytes = b.vec(0, 1)[1]
        offset, length = b.num(1, "Q"), b.num(2, "Q")
        if offset > 1:
            if offset + length > size:
                raise _Corrupt(f"buffer {i} lies outside the file (offset {offset} + {length} > {size} bytes)")
            nbytes = length
        sizes.append(nbytes)
    if root.vec(8, 4)[1] or root.vec(9, 4)[1]:
        raise _Unsafe("it reads its weights from external buffer files, which modelkit does not open")
    for i in root.ints(5):
        if not 0 <= i < len(sizes):
            raise _Corrupt(f"metadata buffer {i} does not exist (the model has {len(sizes)} buffers)")
    for md in root.tables(6):
        if md.num(1, "I") >= len(sizes):
            raise _Corrupt(f"metadata '{md.string(0)}' names buffer {md.num(1, 'I')} of {len(sizes)}")
    subgraphs = root.tables(2)
    if not subgraphs:
        raise _Corrupt("it has no subgraphs")
    ntensors, calls = [], []
    for g, sg in enumerate(subgraphs):
        n, c = _check_subgraph(g, sg, codes, sizes, len(subgraphs))
        ntensors.append(n)
        calls.append(c)
    for sd in root.tables(7):
        key, g = sd.string(2), sd.num(4, "I")
        if g >= len(subgraphs):
            raise _Corrupt(f"signature '{key}' names subgraph {g}; the model has {len(subgraphs)}")
        for kind, slot in (("input", 0), ("output", 1)):
            for tm in sd.tables(slot):
                if tm.num(1, "I") >= ntensors[g]:
                    raise _Corrupt(f"signature '{key}' {kind} '{tm.string(0)}' names tensor {tm.num(1, 'I')} "
                                   f"of subgraph {g}, which has {ntensors[g]}")
    callers: list[list[int]] = [[] for _ in subgraphs]  # control flow must not recurse: a topological order
    for g, c in enumerate(calls):
        for h in c:
            callers[h].append(g)
    left, ready = [len(c) for c in calls], [g for g, c in enumerate(calls) if not c]
    while ready:
        for g in callers[ready.pop()]:
            left[g] -= 1
            if not left[g]:
                ready.append(g)
    if any(left):
        raise _Corrupt(f"subgraph {left.index(max(left))} is part of a recursion (its control flow calls itself)")


def _check_subgraph(g: int, sg: _Table, codes: list[int], sizes: list[int], nsub: int) -> tuple[int, set[int]]:
    tensors = sg.tables(0)
    nt, types, const, empty = len(tensors), [], set(), set()
    for i, t in enumerate(tensors):
        shape, ttype, buf = t.ints(0), t.num(1, "b"), t.num(2, "I")
        what = f"tensor {i} of subgraph {g}"
        if ttype not in _SIZES:
            raise _Corrupt(f"{what} has an unknown type {ttype}")
        if len(shape) > MAX_RANK or any(d < 0 for d in shape):
            raise _Corrupt(f"{what} has an invalid shape {shape[:MAX_RANK + 1]}")
        signature = t.ints(7)
        if signature and (len(signature) != len(shape) or any(d < -1 for d in signature)):
            raise _Corrupt(f"{what} has an invalid shape signature {signature[:MAX_RANK + 1]} for shape {shape}")
        if buf >= len(sizes):
            raise _Corrupt(f"{what} names buffer {buf}; the model has {len(sizes)}")
        if t.num(10, "I"):
            raise _Unsafe(f"{what} reads its data from an external buffer file, which modelkit does not open")
        need = math.ceil(math.prod(shape) * (_SIZES[ttype] or 0))
        if sizes[buf] and t.table(6) is None and sizes[buf] < need:
            raise _Corrupt(f"{what} of shape {shape} needs {need} bytes of data; its buffer {buf} holds {sizes[buf]}")
        q = t.table(4)
        if q is not None:
            scales, zeros, axis = q.vec(2, 4)[1], q.vec(3, 8)[1], q.num(6, "i")
            if scales > 1 and not (0 <= axis < len(shape) and shape[axis] == scales) or zeros > 1 and zeros != scales:
                raise _Corrupt(f"{what} has {scales} scales and {zeros} zero points for axis {axis} of shape {shape}")
        types.append(ttype)
        if sizes[buf] or t.num(5, "B"):  # data, or a variable tensor (state the interpreter keeps)
            const.add(i)
        elif shape and 0 in shape:  # no element to read (a RESHAPE's [] shape is the constant of shape [0])
            empty.add(i)
    written = set(sg.ints(1))  # subgraph inputs, then operators' outputs: written once, before it is read
    for kind, slot in (("input", 1), ("output", 2)):
        for x in sg.ints(slot):
            if not 0 <= x < nt:
                raise _Corrupt(f"subgraph {g} {kind} {x} is not one of its {nt} tensors")
    calls: set[int] = set()
    for k, op in enumerate(sg.tables(3)):
        oc = op.num(0, "I")
        if oc >= len(codes):
            raise _Corrupt(f"operator {k} of subgraph {g} names operator code {oc}; the model has {len(codes)}")
        code = codes[oc]
        name, ins, outs = _OPS[code], op.ints(1), op.ints(2)
        what = f"operator {k} of subgraph {g} ({name})"
        if any(not -1 <= x < nt for x in ins) or any(not 0 <= x < nt for x in outs + op.ints(8)):
            raise _Corrupt(f"{what} names a tensor that does not exist (inputs {ins[:8]}, outputs {outs[:8]}; "
                           f"the subgraph has {nt})")
        if code in _COUNTS:
            optional = _OPTIONAL.get(name, set())
            absent = [i for i, x in enumerate(ins) if x == -1 and optional is not None and i not in optional]
            if absent:
                raise _Corrupt(f"{what} input {absent[0]} is absent (-1); {name} needs it")
            lo, hi, olo, ohi = _COUNTS[code]
            for kind, n, a, b in (("inputs", len(ins), lo, hi), ("outputs", len(outs), olo, ohi)):
                if not a <= n <= b:
                    takes = f"{a}" if a == b else f"{a} or more" if b == math.inf else f"{a} to {b}"
                    raise _Corrupt(f"{what} has {n} {kind[:-1] if n == 1 else kind}; {name} takes {takes}")
        unset = [x for x in ins if x >= 0 and x not in written and x not in const and x not in empty]
        if unset:
            raise _Corrupt(f"{what} reads tensor {unset[0]} before anything wrote it")
        again = [x for x in outs if x in const or x in written or outs.count(x) > 1]
        if again:
            raise _Corrupt(f"{what} writes tensor {again[0]}, which is constant, an input or written elsewhere")
        written.update(outs)
        for pos, allowed in _INDEX_INPUTS.get(name, {}).items():
            if pos < len(ins) and ins[pos] >= 0 and types[ins[pos]] not in allowed:
                raise _Corrupt(f"{what} input {pos} is of type {_type_name(types[ins[pos]])}; {name} takes "
                               f"{' or '.join(sorted(_type_name(t) for t in allowed))} there")
        if name in _SAME_TYPE:
            data = [x for i, x in enumerate(ins) if _SAME_TYPE[name] is None or i in _SAME_TYPE[name]]
            kinds = {_type_name(types[x]) for x in data + outs if x >= 0}
            if len(kinds) > 1:
                raise _Corrupt(f"{what} mixes tensor types {sorted(kinds)}; {name} keeps its input's type")
        if name in _NUMERIC and any(x >= 0 and types[x] in _NON_NUMERIC for x in ins + outs):
            raise _Corrupt(f"{what} has a tensor of a non-numeric type")
        otype = op.num(3, "B")
        if otype and otype not in _OPT_NAMES:
            raise _Corrupt(f"{what} has unknown options type {otype}")
        if otype and _OPTIONS.get(code, otype) != otype:
            raise _Corrupt(f"{what} carries {_OPT_NAMES[otype]}; {name} takes {_OPT_NAMES[_OPTIONS[code]]}")
        if name in _NUM_OUTPUTS:
            want, slot = _NUM_OUTPUTS[name]
            opts = op.table(4) if otype and _OPT_NAMES[otype] == want else None
            if opts is None or opts.num(slot, "i") != len(outs):
                said = f"its {want} say {opts.num(slot, 'i')}" if opts else f"no {want} say how many"
                raise _Corrupt(f"{what} has {len(outs)} output{'s' * (len(outs) != 1)}; {said}")
        if name in _CALLS:
            want, slots = _CALLS[name]
            opts = op.table(4) if otype and _OPT_NAMES[otype] == want else None
            if opts is None:
                raise _Corrupt(f"{what} has no {want} naming the subgraphs it runs")
            for s in slots:
                h = opts.num(s, "i")
                if not 0 <= h < nsub or h == g:
                    raise _Corrupt(f"{what} runs subgraph {h}; the model has {nsub} and this is subgraph {g}")
                calls.add(h)
    unset = [x for x in sg.ints(2) if x not in written and x not in const]
    if unset:
        raise _Corrupt(f"subgraph {g} output {unset[0]} is never written")
    return nt, calls


def _type_name(t: int) -> str:
    return next((k for k, v in _T.items() if v == t), str(t))


# ---------------------------------------------------------------------------- the sandboxed first open
