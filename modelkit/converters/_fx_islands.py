"""The float islands (modelkit.converters.float_islands) of an ExecuTorch int8 program: ops left unannotated, so
that XNNPACKQuantizer's pt2e flow keeps them float32.

XNNPACKQuantizer annotates every add and mul it can, with one symmetric int8 scale per tensor: the same ruin
float_islands keeps ONNX, TFLite and OpenVINO from. Measured (nc124, a digits CNN with UnitNormalization after a
ReLU): a zero vector's inverse norm is Keras' bound, 1e12, its int8 scale rounded every other inverse norm to zero
and ExecuTorch int8 answered one class (top-1 0.098 against 0.947 in float). The torch.export graph is read as
float_islands' engine-neutral ops (aten's names, a few mapped to the kinds the rule knows; scalar arguments and small
weights as constants), and the annotations of the ops kept_float names are removed after the quantizer's own.
"""
from __future__ import annotations

from operator import attrgetter
from typing import Any, Callable

import numpy as np

from .float_islands import Op, kept_float, said_kept

# aten op names the rule knows by another kind (float_islands' WEIGHTED, CLAMPS, ...)
KINDS = {"linear": "matmul", "mm": "matmul", "addmm": "gemm", "bmm": "batch_matmul", "conv1d": "conv",
         "conv2d": "conv", "convolution": "conv", "_softmax": "softmax", "clamp_min": "maximum",
         "clamp_max": "minimum", "true_divide": "div", "rsub": "sub", "index_select": "gather", "embedding": "gather"}
SMALL = 1 << 16  # a weight of more values is a matrix to read, not a constant an elementwise op scales by
KEY = "quantization_annotation"


def fx_ops(model: Any) -> tuple[list[Op], dict[str, np.ndarray], list[str]]:
    """A torch.fx GraphModule as (ops, small constants, graph inputs) for kept_float."""
    ops: list[Op] = []
    constants: dict[str, np.ndarray] = {}
    inputs: list[str] = []
    for node in model.graph.nodes:
        if node.op == "placeholder":
            inputs.append(node.name)
        elif node.op == "get_attr":
            value = attrgetter(node.target)(model)
            if hasattr(value, "numel") and value.numel() <= SMALL and value.is_floating_point():
                constants[node.name] = value.detach().cpu().numpy()
        elif node.op == "call_function":
            feeds = []
            for i, arg in enumerate(node.args):
                if hasattr(arg, "op"):  # an fx.Node
                    feeds.append(arg.name)
                elif isinstance(arg, (int, float)) and not isinstance(arg, bool):
                    constants[f"{node.name}:{i}"] = np.array(arg)
                    feeds.append(f"{node.name}:{i}")
            ops.append(Op(node.name, _kind(node.target), tuple(feeds), (node.name,)))
    return ops, constants, inputs


def _kind(target: Any) -> str:
    """aten.mul.Tensor -> 'mul'; other callables (operator.getitem) by their name."""
    schema = getattr(target, "_schema", None)
    name = schema.name.split("::")[-1] if schema is not None else getattr(target, "__name__", str(target))
    return KINDS.get(name, name).lower()


def islands_kept_float(annotate: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """XNNPACKQuantizer's annotation, after which the ops float_islands keeps are unannotated (said in one line)."""
    def annotate_then_keep(model: Any) -> Any:
        model = annotate(model)
        kept = set(kept_float(*fx_ops(model)))
        read_float = set()  # what an L2 normalization reads: its output float, its inputs and weights still int8
        for node in _normalized_by_l2(model, kept):
            annotation = node.meta.get(KEY)
            if annotation is not None:
                annotation.output_qspec = None
                if not annotation.input_qspec_map:
                    node.meta.pop(KEY)
            read_float.add(node.name)
        float_nodes = {n for n in model.graph.nodes if n.name in kept}
        while float_nodes:  # and the layout ops that share a float output's quantization (a view of it)
            for node in float_nodes:
                node.meta.pop(KEY, None)
            float_nodes = {n for n in model.graph.nodes
                           if KEY in n.meta and _shares_with(n.meta[KEY], kept | read_float)}
            kept |= {n.name for n in float_nodes}
        said_kept([n.name for n in model.graph.nodes if n.name in kept | read_float])
        return model
    return annotate_then_keep


def _normalized_by_l2(model: Any, kept: set[str]) -> list[Any]:
    """The nodes whose output an L2 normalization kept float reads (x0 of sum(square(x0))). It scales every vector
    to length 1 with a bound of 1e-12 (UnitNormalization): a vector a few int8 steps long comes out as mostly
    rounding error. Measured (nc124's test model, ExecuTorch int8): top-1 0.322 with the norm float and its input
    int8, 0.917 with that input float too (0.919 in float)."""
    found = []
    for node in model.graph.nodes:
        square = node.args[0] if node.name in kept and _kind(node.target) == "sum" and node.args else None
        if getattr(square, "name", None) in kept and _kind(square.target) in ("square", "pow", "mul") \
                and square.args and hasattr(square.args[0], "meta"):
            found.append(square.args[0])
    return found


def _shares_with(annotation: Any, kept: set[str]) -> bool:
    """Whether an annotation shares a quantization spec with an op (or an edge from an op) named in `kept`."""
    specs = [*annotation.input_qspec_map.values(), annotation.output_qspec]
    for spec in specs:
        ref = getattr(spec, "edge_or_node", None)
        nodes = ref if isinstance(ref, tuple) else (ref,)
        if any(getattr(n, "name", None) in kept for n in nodes):
            return True
    return False
