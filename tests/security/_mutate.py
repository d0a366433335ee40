"""Structure-aware mutators for the fuzzers: a .tflite is unpacked with the flatbuffer schema's object API
and an .onnx parsed as a protobuf; 1 to 3 mutations change indices, opcodes / op types, shapes, dtypes,
buffers / initializers or attributes; the result is packed again, so it passes the format's own framing
and reaches the checks and the engine. Deterministic: mutant `i` of a seed is always the same file."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ._tflite import pack, schema, set_opcode, unpack

EDGE_INTS = [0, 1, 2, 3, -1, -2, 7, 255, 256, 2**15, 2**16 + 1, 2**31 - 1, -(2**31), 2**20]
COMMON_TFLITE = ["ADD", "MUL", "SUB", "DIV", "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "SOFTMAX", "RESHAPE",
                 "SPLIT", "SPLIT_V", "CONCATENATION", "BATCH_MATMUL", "MEAN", "SUM", "GATHER", "TRANSPOSE", "PAD",
                 "STRIDED_SLICE", "SLICE", "EXPAND_DIMS", "SQUEEZE", "MAX_POOL_2D", "AVERAGE_POOL_2D", "PACK", "UNPACK",
                 "TILE", "WHILE", "IF", "CALL_ONCE", "CUSTOM", "DEQUANTIZE", "QUANTIZE", "CAST", "GATHER_ND",
                 "TRANSPOSE_CONV", "RESIZE_BILINEAR", "SELECT_V2", "TOPK_V2", "ONE_HOT", "UNIDIRECTIONAL_SEQUENCE_LSTM",
                 "SCATTER_ND", "BROADCAST_TO", "CUMSUM", "ARG_MAX", "LOGISTIC", "TANH", "RELU", "HARD_SWISH", "GELU"]


def _pick_int(rng: random.Random, n: int) -> int:
    """An index for a collection of n: mostly valid, often just out of range, sometimes extreme."""
    return rng.choice([rng.randrange(max(n, 1)), rng.randrange(max(n, 1)), n, n + 1, n + 100, *EDGE_INTS])


# ------------------------------------------------------------------------------------------- TFLite

def _tflite_mutations(m, rng: random.Random) -> list[Callable[[], None]]:
    s = schema()
    sgs = m.subgraphs
    sg = rng.choice(sgs)
    tensors, ops = sg.tensors or [], sg.operators or []
    nt, nb = len(tensors), len(m.buffers or [])
    op = rng.choice(ops) if ops else None
    t = rng.choice(tensors) if tensors else None
    names = [n for n in COMMON_TFLITE if hasattr(s.BuiltinOperator, n)]
    all_ops = [k for k in vars(s.BuiltinOperator) if not k.startswith("_")]

    def ivec(v) -> list[int]:
        return [int(x) for x in (v if v is not None else [])]

    def sig_subgraph():
        rng.choice(m.signatureDefs).subgraphIndex = rng.choice([1, 2, 7, 2**31 - 1, 2**32 - 1])

    def sig_tensor():
        sd = rng.choice(m.signatureDefs)
        rng.choice((sd.inputs or []) + (sd.outputs or [])).tensorIndex = _pick_int(rng, nt) % 2**32

    def op_io():
        field = rng.choice(["inputs", "outputs"])
        v = ivec(getattr(op, field))
        kind = rng.randrange(4)
        if kind == 0 and v:
            v[rng.randrange(len(v))] = _pick_int(rng, nt)
        elif kind == 1:
            v.insert(rng.randrange(len(v) + 1), rng.choice([-1, rng.randrange(nt), _pick_int(rng, nt)]))
        elif kind == 2 and v:
            v.pop(rng.randrange(len(v)))
        else:
            v = [rng.randrange(nt) for _ in range(rng.choice([0, 1, 2, 3, 5]))]
        setattr(op, field, v)

    def opcode():
        oc = rng.randrange(len(m.operatorCodes))
        set_opcode(m, oc, rng.choice(names if rng.random() < 0.8 else all_ops))
        if m.operatorCodes[oc].builtinCode == s.BuiltinOperator.CUSTOM:
            m.operatorCodes[oc].customCode = rng.choice(["", "FlexAddV2", "TFLite_Detection_PostProcess", "x" * 40])

    def opcode_index():
        op.opcodeIndex = _pick_int(rng, len(m.operatorCodes)) % 2**32

    def options():
        if rng.random() < 0.5:
            op.builtinOptionsType, op.builtinOptions = 0, None
        else:
            other = rng.choice([o for g in sgs for o in (g.operators or []) if o.builtinOptions is not None] or [op])
            op.builtinOptionsType, op.builtinOptions = other.builtinOptionsType, other.builtinOptions

    def subgraph_index_option():  # WHILE / IF / CALL_ONCE options naming subgraphs
        opcode_ = rng.choice(["WHILE", "IF", "CALL_ONCE"])
        set_opcode(m, op.opcodeIndex % len(m.operatorCodes), opcode_)
        cls = {"WHILE": s.WhileOptionsT, "IF": s.IfOptionsT, "CALL_ONCE": s.CallOnceOptionsT}[opcode_]
        o = cls()
        for f in vars(o):
            setattr(o, f, rng.choice([0, 1, -1, 5]))
        op.builtinOptionsType = getattr(s.BuiltinOptions, cls.__name__[:-1])
        op.builtinOptions = o

    def shape():
        field = rng.choice(["shape", "shapeSignature"])
        v = ivec(getattr(t, field)) or ivec(t.shape)
        kind = rng.randrange(4)
        if kind == 0 and v:
            v[rng.randrange(len(v))] = rng.choice([0, -1, -3, 2, 3, 1000, 2**20, 2**31 - 1])
        elif kind == 1:
            v.insert(rng.randrange(len(v) + 1), rng.choice([1, 2, 0, 7]))
        elif kind == 2 and v:
            v.pop(rng.randrange(len(v)))
        else:
            v = [1] * rng.choice([0, 7, 9, 17, 40])
        setattr(t, field, v)

    def tensor_type():
        t.type = rng.choice([0, 1, 2, 3, 4, 5, 6, 9, 10, 13, 14, 17, 19, 22, 23, 60, -1])

    def tensor_buffer():
        t.buffer = _pick_int(rng, nb) % 2**32

    def buffer_data():
        with_data = [b for b in m.buffers if b.data is not None and len(b.data)]
        b = rng.choice(with_data) if with_data and rng.random() < 0.7 else rng.choice(m.buffers)
        kind = rng.randrange(4)
        data = bytes(b.data) if b.data is not None else b""
        if kind == 0:
            b.data = list(data[: rng.randrange(len(data) + 1)]) or None
        elif kind == 1:
            b.data = list(data + bytes(rng.randrange(1, 64)))
        elif kind == 2:
            b.offset, b.size = rng.choice([(2, 16), (10**6, 4), (2**63, 2**63), (16, 2**40), (8, 0)])
        else:
            b.data = list(np.full(rng.randrange(1, 256), rng.choice([0, 255, 127]), np.uint8).tobytes())

    def subgraph_io():
        field = rng.choice(["inputs", "outputs"])
        v = ivec(getattr(sg, field))
        if v and rng.random() < 0.6:
            v[rng.randrange(len(v))] = _pick_int(rng, nt)
        else:
            v.append(rng.randrange(nt))
        setattr(sg, field, v)

    def op_order():
        kind = rng.randrange(3)
        if kind == 0 and len(ops) > 1:
            i, j = rng.sample(range(len(ops)), 2)
            ops[i], ops[j] = ops[j], ops[i]
        elif kind == 1 and ops:
            ops.pop(rng.randrange(len(ops)))
        else:
            ops.insert(rng.randrange(len(ops) + 1), rng.choice(ops))

    def quantization():
        q = s.QuantizationParametersT()
        n = rng.choice([1, 2, 3, 7])
        q.scale, q.zeroPoint = [rng.choice([0.0, 1.0, 1e-30, float("inf")])] * n, [0] * rng.choice([n, 1, 0])
        q.quantizedDimension = rng.choice([0, 1, 3, -1, 9])
        t.quantization = q

    out = [sig_subgraph, sig_tensor, opcode, opcode_index, shape, tensor_type, tensor_buffer, buffer_data,
           subgraph_io, op_order, quantization] + ([op_io, op_io, options, subgraph_index_option] if op else [])
    return out


def tflite_mutants(src: bytes, count: int, seed: int = 0) -> Iterator[tuple[str, bytes]]:
    """(description, file bytes) for `count` mutants of a .tflite."""
    i = 0
    while i < count:
        rng = random.Random(seed * 1_000_003 + i)
        m = unpack(src)
        done = []
        for _ in range(rng.choice([1, 1, 2, 3])):
            mutation = rng.choice(_tflite_mutations(m, rng))
            try:
                mutation()
            except (IndexError, ValueError):  # nothing to mutate of that kind
                continue
            done.append(mutation.__name__)
        try:
            data = pack(m)
        except Exception:  # noqa: BLE001 - a value the builder cannot write (e.g. out of its int range)
            seed += 7919
            continue
        yield f"tflite#{i} {'+'.join(done) or 'none'}", data
        i += 1


# --------------------------------------------------------------------------------------------- ONNX

COMMON_ONNX = ["Add", "Mul", "Sub", "Div", "MatMul", "Gemm", "Conv", "ConvTranspose", "Relu", "Softmax", "Reshape",
               "Transpose", "Concat", "Split", "Gather", "GatherND", "Slice", "Squeeze", "Unsqueeze", "MaxPool",
               "AveragePool", "ReduceMean", "ReduceSum", "Pad", "Tile", "Expand", "Cast", "Resize", "TopK", "Where",
               "Einsum", "LSTM", "Loop", "If", "Scan", "ScatterND", "OneHot", "NonZero", "Range", "ConstantOfShape",
               "Col2Im", "GridSample", "DepthToSpace", "BatchNormalization", "LayerNormalization", "QLinearConv",
               "DequantizeLinear", "Bogus", ""]


def build_rich_onnx(path: Path) -> Path:
    """ONNX with Conv, Relu, MaxPool, Reshape, Split, Concat, Gemm, Transpose, Gather, Unsqueeze, MatMul,
    ReduceMean, Mul, Softmax; inputs image (batch, 3, 8, 8) and x (batch, 4); outputs probs and gram."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(2)
    f32 = np.float32
    inits = {"K": rng.standard_normal((4, 3, 3, 3)).astype(f32), "KB": rng.standard_normal(4).astype(f32),
             "shape": np.array([-1, 64], np.int64), "splits": np.array([32, 32], np.int64),
             "W": rng.standard_normal((68, 5)).astype(f32), "B": rng.standard_normal(5).astype(f32),
             "idx": np.array([4, 0, 2, 1, 3], np.int64), "ax2": np.array([2], np.int64),
             "ax1": np.array([1], np.int64), "half": np.array(0.5, f32)}
    n = helper.make_node
    nodes = [n("Conv", ["image", "K", "KB"], ["c"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
             n("Relu", ["c"], ["r"]), n("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             n("Reshape", ["p", "shape"], ["f"]), n("Split", ["f", "splits"], ["left", "right"], axis=1),
             n("Concat", ["right", "left", "x"], ["cat"], axis=1), n("Gemm", ["cat", "W", "B"], ["h"]),
             n("Gather", ["h", "idx"], ["g"], axis=1), n("Softmax", ["g"], ["probs"], axis=-1),
             n("Unsqueeze", ["h", "ax2"], ["col"]), n("Unsqueeze", ["h", "ax1"], ["row"]),
             n("MatMul", ["col", "row"], ["outer"]), n("Transpose", ["outer"], ["outer_t"], perm=[0, 2, 1]),
             n("ReduceMean", ["outer_t", "ax2"], ["mean"], keepdims=0), n("Mul", ["mean", "half"], ["gram"])]
    graph = helper.make_graph(
        nodes, "rich",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 8, 8]),
         helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 5]),
         helper.make_tensor_value_info("gram", TensorProto.FLOAT, ["batch", 5])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def _onnx_mutations(m, rng: random.Random) -> list[Callable[[], None]]:
    from onnx import AttributeProto, TensorProto, helper

    g = m.graph
    node = rng.choice(list(g.node))
    names = [v.name for v in g.input] + [i.name for i in g.initializer] + [o for nd in g.node for o in nd.output]

    def node_input():
        kind = rng.randrange(4)
        if kind == 0 and len(node.input):
            node.input[rng.randrange(len(node.input))] = rng.choice(names + ["", "missing", node.output[0]])
        elif kind == 1:
            node.input.append(rng.choice(names + [""]))
        elif kind == 2 and len(node.input):
            del node.input[rng.randrange(len(node.input))]
        else:
            node.output.append(rng.choice(["extra", names[0], node.output[0]]))

    def op_type():
        node.op_type = rng.choice(COMMON_ONNX)

    def attribute_type():
        if not len(node.attribute):
            node.attribute.append(helper.make_attribute(rng.choice(["axis", "perm", "pads", "group"]), 1))
        a = rng.choice(list(node.attribute))
        a.type = rng.choice([AttributeProto.FLOAT, AttributeProto.INT, AttributeProto.STRING, AttributeProto.TENSOR,
                             AttributeProto.GRAPH, AttributeProto.FLOATS, AttributeProto.INTS, AttributeProto.STRINGS,
                             AttributeProto.SPARSE_TENSOR, AttributeProto.TYPE_PROTO, 0, 99])

    def attribute_value():
        name = rng.choice(["axis", "perm", "pads", "kernel_shape", "strides", "dilations", "group", "keepdims",
                           "split", "transA", "to", "mode", "axes", "num_outputs"])
        value = rng.choice([rng.choice(EDGE_INTS), [rng.choice(EDGE_INTS) for _ in range(rng.randrange(6))],
                            "nearest", 1.5, [0.5, -1.0]])
        for i, a in enumerate(node.attribute):
            if a.name == name:
                del node.attribute[i]
                break
        node.attribute.append(helper.make_attribute(name, value))

    def drop_attributes():
        del node.attribute[:]

    def initializer_dims():
        init = rng.choice(list(g.initializer))
        kind = rng.randrange(3)
        if kind == 0 and len(init.dims):
            init.dims[rng.randrange(len(init.dims))] = rng.choice([0, -1, 2, 1000, 2**31 - 1, 2**40])
        elif kind == 1:
            init.dims.append(rng.choice([1, 0, 3]))
        else:
            del init.dims[:]

    def initializer_type():
        init = rng.choice(list(g.initializer))
        init.data_type = rng.choice([TensorProto.FLOAT, TensorProto.INT64, TensorProto.INT32, TensorProto.STRING,
                                     TensorProto.BOOL, TensorProto.FLOAT16, TensorProto.DOUBLE, 0, 99])

    def initializer_data():
        init = rng.choice(list(g.initializer))
        raw = init.raw_data
        init.raw_data = rng.choice([raw[: rng.randrange(len(raw) + 1)], raw + bytes(rng.randrange(1, 9)), b""])

    def io_type():
        v = rng.choice(list(g.input) + list(g.output))
        tt = v.type.tensor_type
        if rng.random() < 0.5:
            tt.elem_type = rng.choice([TensorProto.INT64, TensorProto.STRING, TensorProto.BOOL, TensorProto.DOUBLE,
                                       0, 99])
        elif len(tt.shape.dim):
            tt.shape.dim[rng.randrange(len(tt.shape.dim))].dim_value = rng.choice([0, 1, 7, 2**31 - 1, 2**40])

    def opset():
        m.opset_import[0].version = rng.choice([1, 6, 9, 11, 13, 21, 99, 10_000])

    def domain():
        node.domain = rng.choice(["com.microsoft", "ai.onnx.ml", "custom.op", "ai.onnx.preview.training"])

    def node_order():
        nodes = list(g.node)
        kind = rng.randrange(3)
        if kind == 0:
            rng.shuffle(nodes)
        elif kind == 1:
            nodes.pop(rng.randrange(len(nodes)))
        else:
            nodes.insert(rng.randrange(len(nodes) + 1), rng.choice(nodes))
        del g.node[:]
        g.node.extend(nodes)

    def external_data():  # weights "outside the file": paths that leave the folder, missing files, bad ranges
        init = rng.choice(list(g.initializer))
        init.data_location = TensorProto.EXTERNAL
        init.ClearField("raw_data")
        del init.external_data[:]
        for key, value in rng.choice([{"location": "../../etc/passwd"}, {"location": "/etc/passwd"},
                                      {"location": "missing.bin"}, {"location": ""},
                                      {"location": "m.onnx", "offset": "-8", "length": str(2**40)},
                                      {"location": "m.onnx", "offset": str(2**62)}]).items():
            entry = init.external_data.add()
            entry.key, entry.value = key, value

    def duplicate_name():
        init = rng.choice(list(g.initializer))
        init.name = rng.choice(names)

    return [node_input, node_input, op_type, op_type, attribute_type, attribute_value, attribute_value,
            drop_attributes, initializer_dims, initializer_type, initializer_data, io_type, opset, domain,
            node_order, duplicate_name, external_data]


def onnx_mutants(src: bytes, count: int, seed: int = 0) -> Iterator[tuple[str, bytes]]:
    """(description, file bytes) for `count` mutants of an .onnx."""
    import onnx

    for i in range(count):
        rng = random.Random(seed * 1_000_003 + i)
        m = onnx.load_from_string(src)
        done = []
        for _ in range(rng.choice([1, 1, 2, 3])):
            mutation = rng.choice(_onnx_mutations(m, rng))
            try:
                mutation()
            except (IndexError, ValueError, TypeError):
                continue
            done.append(mutation.__name__)
        yield f"onnx#{i} {'+'.join(done) or 'none'}", m.SerializeToString()
