"""ONNX STFT written as the convolution it is, for the engines that cannot run the op.

Keras' MelSpectrogram and STFTSpectrogram layers reach ONNX (torch.onnx's export) as an STFT node. TVM 0.27's
ONNX importer has no converter for it ("OpNotImplemented: STFT"), and OpenVINO 2026.4's ONNX frontend refuses
one whose signal has an open batch ("Shape of signal input must be static"). A real signal's short-time Fourier
transform with a constant step, window and frame length is one strided Conv1D whose 2K kernels are the window
times the cosines and the negated sines of the K frequencies: the same sums, read by every engine.
"""
from __future__ import annotations

from typing import Any


def has_stft(proto: Any) -> bool:
    """Whether the main graph has an STFT node."""
    return any(n.op_type == "STFT" and n.domain in ("", "ai.onnx") for n in proto.graph.node)


def read_with_stft_as_conv(path: Any) -> Any:
    """The ONNX model at `path` with its STFT nodes written as Conv (stft_as_conv), or None when it has none to
    write, or is no file onnx can parse."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        proto = onnx.load(str(path))
    except (DecodeError, OSError, ValueError):
        return None
    proto, replaced = stft_as_conv(proto)
    return proto if replaced else None


def stft_as_conv(proto: Any) -> tuple[Any, int]:
    """`proto` with each STFT node of a real signal, constant step, window and frame length replaced by
    Transpose, Conv, Reshape, Transpose (the same output: batch, frames, bins, real/imaginary), and how many
    were replaced; the others are left for the engine to judge."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    from .._onnx import constant_values

    if not has_stft(proto):
        return proto, 0
    inferred = onnx.shape_inference.infer_shapes(proto)
    shapes = {v.name: v.type.tensor_type for v in (*inferred.graph.value_info, *inferred.graph.input)}
    consts = constant_values(proto.graph)
    nodes, added, done = [], [], 0
    for node in proto.graph.node:
        kernel = _kernel(node, shapes, consts) if node.op_type == "STFT" else None
        if kernel is None:
            nodes.append(node)
            continue
        weights, step, bins = kernel
        base = f"{node.name or node.output[0]}__modelkit_stft"
        added += [numpy_helper.from_array(weights, f"{base}_kernels"),
                  numpy_helper.from_array(np.array([0, 2, bins, -1], np.int64), f"{base}_split")]
        nodes += [helper.make_node("Transpose", [node.input[0]], [f"{base}_signal"], perm=[0, 2, 1]),
                  helper.make_node("Conv", [f"{base}_signal", f"{base}_kernels"], [f"{base}_conv"],
                                   strides=[step], name=f"{base}_conv"),
                  helper.make_node("Reshape", [f"{base}_conv", f"{base}_split"], [f"{base}_parts"]),
                  helper.make_node("Transpose", [f"{base}_parts"], [node.output[0]], perm=[0, 3, 2, 1])]
        done += 1
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    read = {i for n in nodes for i in n.input} | {o.name for o in proto.graph.output}
    kept = [i for i in proto.graph.initializer if i.name in read]  # the replaced nodes' step, window, length
    del proto.graph.initializer[:]
    proto.graph.initializer.extend([*kept, *added])
    return proto, done


def _kernel(node: Any, shapes: dict[str, Any], consts: dict[str, Any]) -> tuple[Any, int, int] | None:
    """(kernels [2K, 1, N], step, K) for an STFT node this module can write as a Conv, else None."""
    import numpy as np
    from onnx import helper

    ins = list(node.input) + [""] * (4 - len(node.input))
    signal = shapes.get(ins[0])
    dims = [d.dim_value if d.HasField("dim_value") else None for d in signal.shape.dim] if signal else []
    if len(dims) != 3 or dims[2] != 1 or ins[1] not in consts:
        return None  # a complex signal, or one of unknown rank, or a computed step: the engine decides
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    window = consts.get(ins[2]) if ins[2] else None
    length = consts.get(ins[3]) if ins[3] else None
    if (ins[2] and window is None) or (ins[3] and length is None) or (window is None and length is None):
        return None
    n = int(length) if length is not None else int(np.size(window))
    window = np.ones(n) if window is None else np.asarray(window, np.float64).reshape(-1)
    if window.size != n:
        return None
    k = n // 2 + 1 if attrs.get("onesided", 1) else n
    angle = 2 * np.pi * np.outer(np.arange(k), np.arange(n)) / n
    kernels = np.concatenate([window * np.cos(angle), -window * np.sin(angle)])[:, None, :]
    dtype = helper.tensor_dtype_to_np_dtype(signal.elem_type)
    return kernels.astype(dtype), int(np.asarray(consts[ins[1]]).reshape(())), k
