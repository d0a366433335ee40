"""Elementwise ops that int8 quantization would ruin, to be kept in float32 (ONNX, TFLite and OpenVINO int8).

Both quantizers give every tensor one scale. A Keras `Normalization` over raw features (a tabular model: areas
in the thousands beside ratios of 0.01) becomes `Sub(x, mean)` and `Mul(., 1 / std)` whose constants span five
orders of magnitude: quantized per tensor, the small means, the large features' multipliers and every feature
of small range round to zero, and the model's output no longer depends on its input (measured: breast-cancer
classifier, 30 features, int8 accuracy 0.626 = always the majority class, against 0.959 in float; onnxruntime
and TFLite alike; OpenVINO's NNCF quantizes only weighted ops' inputs and kept 0.959).

Kept in float: every Mul / Div with a *wide* constant operand (its nonzero magnitudes span more than SPAN, so a
per-tensor int8 scale rounds its smallest values to nothing: also ConvNeXt's LayerScale), every Sub / Add with a
wide constant applied to a model input (centering raw features of different scales), the chain of elementwise
ops with a constant operand that leads from a model input to those (the Sub before the Mul), and an attention
mask applied as a penalty with the Softmax after it and the ops that bring the scores to it (_masked_softmax).
A spectrogram up to its log (_log_front_end) and a normalization's statistics written out in elementwise ops
(_norm_statistics: LayerNormalization as tf2onnx and TFLite write it, an RMS or an L2 normalization). The float
arithmetic that computes a gather's indices (_index_arithmetic: a spatial transformer's sampling coordinates). In
TFLite, ONE_HOT too: its int8 kernel computes wrong values (TFLITE_WRONG_IN_INT8).
The rest of the graph, where the time goes (Conv, MatMul), is still int8. A graph without such ops is quantized
exactly as before. OpenVINO's NNCF takes the same names as its ignored scope (onnx_openvino.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

SPAN = 64.0  # int8's 127 steps: a value 64x below the largest keeps under 2 steps, an error of 25 % or more
SCALES, SHIFTS = ("mul", "div"), ("sub", "add")
PENALTY = 1e4  # a constant this large is a mask's penalty (Keras: -1e9), never a value the model computes with
SELECTS = ("where", "select", "select_v2")
# ops that pass a tensor on unchanged in value (TFLite's quantizer gives their input and output one scale)
PASSING = ("reshape", "transpose", "squeeze", "expand_dims", "unsqueeze", "identity", "cast")
# the ops that compute attention scores: where a walk back from the masking stops, kept float itself
SCORES = ("sum", "reducesum", "matmul", "batch_matmul", "batchmatmul", "einsum", "fully_connected")
# TFLite ops whose int8 kernel computes wrong values: ONE_HOT (nc46's mixture of experts, weights of the top-2
# experts as one_hot(ids) * softmax: int8 top-1 0.736 against 0.907 in float, 0.902 with ONE_HOT alone kept float)
TFLITE_WRONG_IN_INT8 = ("one_hot",)
# ops with weights (ONNX, TFLite, OpenVINO names, lower-cased): a spectrogram front end has two (the STFT as a
# real and an imaginary convolution) or an STFT / RFFT op of its own
WEIGHTED = ("conv", "conv_2d", "convolution", "groupconvolution", "depthwise_conv_2d", "matmul", "gemm",
            "fully_connected", "batch_matmul")
FRONT_END_WEIGHTED = 2
# a normalization's statistics written out (ONNX, TFLite, OpenVINO kinds): the reduction, the ops on the way to its
# square root, and the root; a sum is a statistic where it sums squares (an L2 normalization)
MEANS = ("mean", "reducemean", "globalaveragepool")  # tf2onnx writes a mean over the last axis as the pool
SUMS = ("sum", "reducesum")
CLAMPS = ("maximum", "max", "minimum", "min")  # an L2 normalization's bound, before its root or after it (Keras')
STATS = MEANS + SUMS + CLAMPS + ("squared_difference", "sub", "mul", "add", "pow", "square", "sqrt", "rsqrt", "div",
                                 "reciprocal", "power")
ROOTS = ("sqrt", "rsqrt")
STAT_DEPTH = 5
UNARY_STATS = ("neg", "reciprocal")  # after the root: tf2onnx writes rsqrt as Sqrt and Reciprocal
# ops reading a table at computed indices (ONNX, TFLite, OpenVINO kinds); the indices are their second input
GATHERS = ("gather", "gathernd", "gather_nd", "gatherelements", "gather_elements")
# OpenVINO's op type names, lower-cased, that name an op the rule knows by another name
OPENVINO_KINDS = {"multiply": "mul", "divide": "div", "subtract": "sub", "convert": "cast"}


@dataclass(frozen=True)
class Op:
    """One node of a graph, engine-neutral: `kind` lower-cased (ONNX 'Mul', TFLite 'MUL' -> 'mul')."""

    name: str
    kind: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def wide(values: np.ndarray) -> bool:
    """Whether a per-tensor int8 scale would round part of `values` to (almost) nothing."""
    mags = np.abs(np.asarray(values, dtype=np.float64)).ravel()
    mags = mags[np.isfinite(mags) & (mags > 0)]
    return mags.size > 1 and float(mags.max()) > SPAN * float(mags.min())


def kept_float(ops: Sequence[Op], constants: Mapping[str, np.ndarray], graph_inputs: Sequence[str]) -> list[str]:
    """Names of the ops to keep in float (the module docstring's rule), in graph order."""
    producer = {out: op for op in ops for out in op.outputs}
    inputs = set(graph_inputs)
    kept: set[str] = set()

    def has_wide(op: Op) -> bool:
        return any(i in constants and wide(constants[i]) for i in op.inputs)

    def keep_chain(op: Op) -> None:
        """This op; and, when a chain of elementwise ops with a constant operand leads to it from a model input
        (Sub(x, mean) before Mul(., 1 / std)), that chain: x itself must not be quantized."""
        chain = [op]
        while True:
            feeding = [producer[i] for i in chain[-1].inputs if i in producer]
            nxt = [p for p in feeding if p.kind in SCALES + SHIFTS and any(i in constants for i in p.inputs)]
            if len(nxt) != 1 or nxt[0] in chain:
                break
            chain.append(nxt[0])
        from_input = any(i in inputs for i in chain[-1].inputs)
        kept.update(o.name for o in (chain if from_input else chain[:1]))

    for op in ops:
        if op.kind in SCALES and has_wide(op):
            keep_chain(op)
        elif op.kind in SHIFTS and has_wide(op) and any(i in inputs for i in op.inputs):
            keep_chain(op)
    kept |= _masked_softmax(ops, constants) | _log_front_end(ops, constants, inputs) | _norm_statistics(ops, constants)
    kept |= _index_arithmetic(ops, constants)
    return [op.name for op in ops if op.name in kept]


def _norm_statistics(ops: Sequence[Op], constants: Mapping[str, np.ndarray]) -> set[str]:
    """A normalization that exporters write out in elementwise ops (tf2onnx and TFLite write Keras'
    LayerNormalization as mean, squared difference, mean, + epsilon, rsqrt, and the scale and shift): its statistics
    and the normalizing ops after them. Quantized, the variance of a few features rounds to a handful of steps and
    its reciprocal square root amplifies that (measured: a two-block ViT on digits, TFLite int8 top-1 0.733 against
    0.799 in float; 0.809 with these float). For each reduction `mean(x)` from whose input a square root is reached
    within STAT_DEPTH statistic ops: the ops on the way from x to that root (not x's other consumers, the residual
    add), the root, and the elementwise ops after it that read only those, x and constants. An RMS normalization
    (`x0 * rsqrt(mean(square(x0)) + eps) * scale`: mean of a square) keeps the square and the ops reading x0 too
    (nc87: a small ViT with RMSNorm, ONNX int8 top-1 0.771 against 0.809 in float). An L2 normalization
    (`x0 * rsqrt(maximum(sum(square(x0)), eps^2))`, or Keras' `minimum(rsqrt(...), 1 / eps)`: UnitNormalization,
    Dot(normalize=True)) likewise, from its sum of squares: a zero vector's inverse norm is the bound, 1e12, and one
    int8 scale over that range rounds every other inverse norm to zero (nc124: ONNX int8 top-1 0.098 against 0.947)."""
    producer, consumers = _links(ops)
    kept: set[str] = set()
    reductions = (op for op in ops if op.inputs and (op.kind in MEANS or (
        op.kind in SUMS and op.inputs[0] in producer and _squares(producer[op.inputs[0]], constants))))
    for mean in reductions:
        x = mean.inputs[0]
        ahead, todo = {}, [(c, 1) for c in consumers.get(x, [])]
        while todo:  # the statistic ops within STAT_DEPTH steps of x
            op, depth = todo.pop()
            if op.name not in ahead and op.kind in STATS and depth <= STAT_DEPTH:
                ahead[op.name] = op
                todo += [(c, depth + 1) for o in op.outputs for c in consumers.get(o, [])]
        roots = [op for op in ahead.values() if op.kind in ROOTS]
        if not roots:
            continue
        region, todo = set(), list(roots)
        while todo:  # back from the roots, through those ops only
            op = todo.pop()
            if op.name not in region:
                region.add(op.name)
                todo += [producer[i] for i in op.inputs if i in producer and producer[i].name in ahead]
        outputs = {o for name in region for o in ahead[name].outputs} | {x}
        square = producer.get(x)
        if square is not None and _squares(square, constants):  # RMS normalization: mean(square(x0)), x0 * rrms
            region.add(square.name)
            outputs.add(square.inputs[0])
        grown = True
        while grown:  # the scale and shift: elementwise ops reading only the statistics, x and constants
            grown = False
            for op in (c for o in list(outputs) for c in consumers.get(o, [])):
                if op.name not in region and op.kind in SCALES + SHIFTS + UNARY_STATS + CLAMPS and all(
                        i in outputs or i in constants for i in op.inputs):
                    region.add(op.name)
                    outputs.update(op.outputs)
                    grown = True
        kept |= region
    return kept


def _squares(op: Op, constants: Mapping[str, np.ndarray]) -> bool:
    """Whether `op` squares its first input: Square (TFLite), Mul(x, x) (tf2onnx), Pow(x, 2) (torch.onnx)."""
    if op.kind == "square" or (op.kind == "mul" and len(op.inputs) == 2 and op.inputs[0] == op.inputs[1]):
        return True
    exponent = constants.get(op.inputs[1]) if op.kind in ("pow", "power") and len(op.inputs) == 2 else None
    return exponent is not None and np.asarray(exponent).size == 1 and float(np.asarray(exponent).ravel()[0]) == 2.0


def _log_front_end(ops: Sequence[Op], constants: Mapping[str, np.ndarray], inputs: set[str]) -> set[str]:
    """A logarithm taken near the model's input (a spectrogram's log or dB: Keras' MelSpectrogram,
    STFTSpectrogram(mode="log")) and every op before it: a power spectrum spans many orders of magnitude, one int8
    scale rounds all but its peaks to zero and their logarithm to the floor (measured: a keyword classifier on
    STFTSpectrogram features, int8 accuracy 0.43 against 0.705 in float). Only when at most FRONT_END_WEIGHTED
    weighted ops (the STFT's real and imaginary convolutions) lie between the input and the log, so that a log
    deep in a network does not keep the network float, and when a weighted op reads its result: a log at the end
    (log-probabilities after a small network's softmax) is no front end."""
    producer, consumers = _links(ops)
    kept: set[str] = set()
    for log in (op for op in ops if op.kind == "log" and _feeds_weighted(op, consumers)):
        before, todo, weighted, reaches_input = {log.name}, [log], 0, False
        while todo and weighted <= FRONT_END_WEIGHTED:
            op = todo.pop()
            reaches_input |= any(i in inputs for i in op.inputs)
            for p in (producer[i] for i in op.inputs if i in producer and i not in constants):
                if p.name not in before:
                    before.add(p.name)
                    weighted += p.kind in WEIGHTED
                    todo.append(p)
        if weighted <= FRONT_END_WEIGHTED and reaches_input:
            kept |= before
    return kept


def _index_arithmetic(ops: Sequence[Op], constants: Mapping[str, np.ndarray]) -> set[str]:
    """Float arithmetic that computes a gather's indices: walking back from a gather's indices to the cast that
    made them integers, that cast and every op before it, up to weighted ops. Quantized, a coordinate of 25 pixels
    gets int8 steps of a fifth of a pixel, and each read lands on a neighbouring pixel or outside the image
    (measured: nc81's spatial transformer, ONNX int8 top-1 0.16 against 0.49 in float; its warp computes each
    sampled pixel's index from the predicted transform, modelkit.converters._warp)."""
    producer, _ = _links(ops)
    kept: set[str] = set()
    todo = [(producer.get(op.inputs[1]), False) for op in ops if op.kind in GATHERS and len(op.inputs) > 1]
    seen: set[tuple[str, bool]] = set()
    while todo:
        op, past_cast = todo.pop()
        if op is None or op.kind in WEIGHTED or (op.name, past_cast) in seen:
            continue
        seen.add((op.name, past_cast))
        past_cast = past_cast or op.kind == "cast"
        if past_cast:
            kept.add(op.name)
        todo += [(producer.get(i), past_cast) for i in op.inputs if i not in constants]
    return kept


def _links(ops: Sequence[Op]) -> tuple[dict[str, Op], dict[str, list[Op]]]:
    """(tensor -> the op writing it, tensor -> the ops reading it)."""
    consumers: dict[str, list[Op]] = {}
    for op in ops:
        for i in op.inputs:
            consumers.setdefault(i, []).append(op)
    return {out: op for op in ops for out in op.outputs}, consumers


def _feeds_weighted(op: Op, consumers: Mapping[str, list[Op]]) -> bool:
    """Whether a weighted op lies downstream of `op`."""
    seen, todo = {op.name}, [op]
    while todo:
        for c in (c for o in todo.pop().outputs for c in consumers.get(o, [])):
            if c.kind in WEIGHTED:
                return True
            if c.name not in seen:
                seen.add(c.name)
                todo.append(c)
    return False


def _masked_softmax(ops: Sequence[Op], constants: Mapping[str, np.ndarray]) -> set[str]:
    """An attention mask applied as a penalty (scores - 1e9 where masked) and the Softmax after it: quantized,
    the masked scores' range (1e9) leaves one int8 step of 4e6 and every unmasked score rounds to the same
    value (measured: Keras Attention(use_causal_mask=True), int8 top-1 0.678 against 0.783). Kept: the ops with
    a float constant of magnitude PENALTY or more, the elementwise ops with a constant operand just before them
    (the scores' scaling), the elementwise ops their results flow through, and the Softmax they reach."""
    producer, consumers = _links(ops)
    kept: set[str] = set()
    todo = [op for op in ops if op.kind in SCALES + SHIFTS + SELECTS and any(
        i in constants and np.asarray(constants[i]).dtype.kind == "f" and np.asarray(constants[i]).size
        and float(np.max(np.abs(constants[i]))) >= PENALTY for i in op.inputs)]
    joins: list[Op] = []
    while todo:
        op = todo.pop()
        if op.name in kept:
            continue
        kept.add(op.name)
        if op.kind != "softmax":
            joins.append(op)
            todo += [c for o in op.outputs for c in consumers.get(o, [])
                     if c.kind in SCALES + SHIFTS + SELECTS + ("softmax",)]
    return kept | _scores_into(joins, kept, producer, constants)


def _scores_into(joins: Sequence[Op], kept: set[str], producer: Mapping[str, Op],
                 constants: Mapping[str, np.ndarray]) -> set[str]:
    """The ops that bring the scores to where the penalty joins them (a Select, an Add of the penalty): back
    through elementwise and passing ops up to, and with, the op that computes the scores (a MatMul, a Sum).
    Quantized, they are given the masked scores' range: TFLite's quantizer shares one scale across a Select and
    its inputs (measured: AdditiveAttention's Sum and MultiHeadAttention's scaled scores got one int8 step of
    4e6 and 9.3, so every score was the same and the padding-masked classifiers lost 0.15 and 0.21 of top-1),
    and tf2onnx's Where becomes Mul(mask, scores) + Mul(1 - mask, -1e9), whose Add NNCF quantized over
    -inf..inf (OpenVINO int8 of the same three models: 0.956 to 0.786 against 1.0)."""
    found: set[str] = set()
    todo = [producer[i] for op in joins for i in op.inputs if i in producer and i not in constants]
    while todo:
        op = todo.pop()
        if op.name in kept or op.name in found:
            continue
        if op.kind in SCORES:
            found.add(op.name)
        elif op.kind in SCALES + SHIFTS + SELECTS + PASSING:
            found.add(op.name)
            todo += [producer[i] for i in op.inputs if i in producer and i not in constants]
    return found


def onnx_kept_float(path: str) -> list[str]:
    """kept_float of an ONNX file: node names for onnxruntime's `nodes_to_exclude`."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(path, load_external_data=False).graph
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer
                 if _small(t.dims) and t.data_location != onnx.TensorProto.EXTERNAL}
    for node in graph.node:  # Constant nodes too (tf2onnx folds most into initializers)
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    ops = [Op(n.name or n.output[0], n.op_type.lower(), tuple(n.input), tuple(n.output)) for n in graph.node]
    return kept_float(ops, constants, [i.name for i in graph.input])


def openvino_kept_float(model: Any) -> list[str]:
    """kept_float of an OpenVINO model (`openvino.Model`): op friendly names for NNCF's ignored scope."""
    ops, constants, inputs = [], {}, []
    for node in model.get_ordered_ops():
        name, kind = node.get_friendly_name(), node.get_type_name().lower()
        outputs = tuple(f"{name}:{k}" for k in range(node.get_output_size()))
        if kind == "constant":
            if _small(list(node.get_output_shape(0))):
                constants[outputs[0]] = node.get_data()
            continue
        if kind == "parameter":
            inputs.append(outputs[0])
            continue
        feeds = tuple(f"{v.get_node().get_friendly_name()}:{v.get_index()}" for v in node.input_values())
        ops.append(Op(name, OPENVINO_KINDS.get(kind, kind), feeds, outputs))
    return kept_float(ops, constants, inputs)


def tflite_kept_float(model: bytes) -> list[str]:
    """kept_float of a TFLite flatbuffer (float, or calibrated and not yet quantized): the ops' first output
    tensor names, as the MLIR quantizer's `denylisted_nodes` takes them."""
    ops, constants, inputs = _tflite_graph(model)
    kept = set(kept_float(ops, constants, inputs)) | {op.name for op in ops if op.kind in TFLITE_WRONG_IN_INT8}
    return [op.name for op in ops if op.name in kept]


def tflite_may_keep(model: bytes) -> bool:
    """Whether a TFLite flatbuffer (quantized or not) has an elementwise op with a constant of more than one
    value, a logarithm, or an op TFLite computes wrongly in int8: only such a model can have ops to keep in float (its
    constants, once int8, no longer show it)."""
    ops, constants, _ = _tflite_graph(model)
    return any(op.kind in TFLITE_WRONG_IN_INT8 + ("log",) or op.kind in SCALES + SHIFTS and any(
        np.size(constants.get(i, 0)) > 1 for i in op.inputs) for op in ops)


def _tflite_graph(model: bytes) -> tuple[list[Op], dict[str, np.ndarray], list[str]]:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model)
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    details = interpreter._get_ops_details()  # noqa: SLF001 - the only reader of a flatbuffer's op graph
    inputs = [tensors[d["index"]]["name"] for d in interpreter.get_input_details()]
    produced = {i for d in details for i in d["outputs"]}
    constants: dict[str, np.ndarray] = {}
    for index, t in tensors.items():
        if index not in produced and t["name"] not in inputs and _small(t["shape"]):
            try:
                constants[t["name"]] = np.array(interpreter.get_tensor(index))
            except ValueError:  # no buffer to read
                continue
    ops = [Op(tensors[d["outputs"][0]]["name"], str(d["op_name"]).lower(),
              tuple(tensors[i]["name"] for i in d["inputs"] if i >= 0),
              tuple(tensors[o]["name"] for o in d["outputs"])) for d in details if len(d["outputs"])]
    return ops, constants, inputs


def said_kept(kept: Sequence[str]) -> None:
    """One progress line naming the ops kept in float32, when there are any."""
    if kept:
        from .._text import progress

        progress(f"int8: {len(kept)} op(s) kept in float32, which one int8 scale per tensor would ruin (constants "
                 f"spanning more than {SPAN:g}x, an attention mask's penalty, a spectrogram before its log, a "
                 f"normalization's statistics, a gather's index arithmetic) or "
                 f"TFLite's int8 ONE_HOT computes wrongly (modelkit/converters/float_islands.py): {_listed(kept)}")


def _listed(kept: Sequence[str], most: int = 16) -> str:
    """The ops' names, each to its first ';' (TFLite names a fused op after all it fused), at most `most`."""
    names = list(dict.fromkeys(k.split(";")[0] for k in kept))
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(names[:most]) + more


def _small(dims: Sequence[int]) -> bool:
    """A constant an elementwise op could be scaled by (a per-feature vector, not a weight matrix to read)."""
    return int(np.prod(list(dims) or [1])) <= 1 << 16
