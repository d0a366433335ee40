"""Run in a torch child by test_xnnpack_passes: models converted to executorch in one process, in order, and after
each which of XNNPACK's pattern graphs (built on first use, cached per process) exist; then the patterns ExecuTorch
builds, checked against the operators modelkit.converters._xnnpack_passes takes every one of them to hold."""
from pathlib import Path
from typing import Any


def _model(kind: str) -> Any:
    import keras

    keras.utils.set_random_seed(0)
    if kind == "cnn":  # a classifier: softmax, no batched matmul, no resizing
        inp = keras.Input((8, 8, 1), name="image")
        h = keras.layers.Conv2D(4, 3, activation="relu")(inp)
        out = keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(h))
    elif kind == "resize":  # a bilinear upsampling between convolutions
        inp = keras.Input((6, 6, 2), name="image")
        h = keras.layers.UpSampling2D(2, interpolation="bilinear")(keras.layers.Conv2D(3, 3, padding="same")(inp))
        out = keras.layers.Conv2D(2, 1)(h)
    else:  # attention: a batched matmul and a softmax
        inp = keras.Input((5, 8), name="tokens")
        h = keras.layers.MultiHeadAttention(2, 4)(inp, inp)
        out = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling1D()(h))
    return keras.Model(inp, out)


def _built() -> dict[str, int]:
    from executorch.backends.xnnpack.partition.graphs import bilinear_2d, sdpa

    return {"sdpa": sdpa.get_graphs.cache_info().currsize,
            "bilinear": bilinear_2d._get_bilinear_2d_graphs.cache_info().currsize}


def _lowered_at_a_fixed_size(model: Any) -> dict[str, int]:
    """Patterns built after lowering `model` exported at one fixed size. Under modelkit's open batch XNNPACK leaves
    the resize to the portable kernel and splits attention's softmax from its matmuls: nothing there to match."""
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    from modelkit.converters._xnnpack_passes import patterns_only_where_they_can_match

    program = torch.export.export(model, (torch.zeros(1, *model.input_shape[1:]),)).run_decompositions({})
    with patterns_only_where_they_can_match():
        to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
    return _built()


def convert_in_order(folder: str, kinds: list[str]) -> dict[str, Any]:
    """{kind: {"built": patterns built after its conversion, "max_abs": its parity}, "fixed": {kind: patterns
    built after} for the resizing then the attention model lowered at a fixed size, "missing": [pass, operator]
    pairs where a pattern ExecuTorch builds lacks an operator _xnnpack_passes takes it to hold}."""
    from modelkit.converters._xnnpack_passes import pattern_passes
    from modelkit.converters.hop import run_hop

    out: dict[str, Any] = {}
    for kind in kinds:
        src = Path(folder) / f"{kind}.keras"
        _model(kind).save(src)
        summary = run_hop(src=str(src), dest=str(Path(folder) / f"{kind}.pte"), source="keras", target="executorch")
        out[kind] = {"built": _built(), "max_abs": max(o["max_abs"] for o in summary["parity"]["outputs"])}
    out["fixed"] = {kind: _lowered_at_a_fixed_size(_model(kind)) for kind in ("resize", "attention")}
    missing = []
    for cls, module, builder, _, needed in pattern_passes():
        for pattern in getattr(module, builder)():
            targets = {node.target for node in pattern.graph.nodes if node.op == "call_function"}
            missing += [[cls.__name__, str(op)] for op in needed if op not in targets]
    out["missing"] = missing
    return out
