"""Real small .tflite files for the hostile-TFLite tests and the structure-aware fuzzer, and flatbuffer
rewriting with ai-edge-litert's schema object API (unpack, change a field, pack again with "TFL3")."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from ._build import build_saved_model, build_tflite


def schema():
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


def unpack(data: bytes):
    return schema().ModelT.InitFromPackedBuf(bytearray(data), 0)


def pack(model) -> bytes:
    import flatbuffers

    b = flatbuffers.Builder(1024)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def op_index(model, name: str) -> int:
    """Index of the operator code of builtin `name` (e.g. 'FULLY_CONNECTED')."""
    code = getattr(schema().BuiltinOperator, name)
    return next(i for i, oc in enumerate(model.operatorCodes) if max(oc.builtinCode, oc.deprecatedBuiltinCode) == code)


def set_opcode(model, index: int, name: str) -> None:
    code = getattr(schema().BuiltinOperator, name)
    model.operatorCodes[index].builtinCode = code
    model.operatorCodes[index].deprecatedBuiltinCode = min(code, 127)


def _signature_subgraph_7(m) -> None:
    m.signatureDefs[0].subgraphIndex = 7


def _fully_connected_to_split(m) -> None:
    set_opcode(m, op_index(m, "FULLY_CONNECTED"), "SPLIT")


def _softmax_to_batch_matmul(m) -> None:
    set_opcode(m, op_index(m, "SOFTMAX"), "BATCH_MATMUL")


# the three files of issue 16 (item 5): name -> (mutation, what the refusal names)
CRAFTED: dict[str, tuple[Callable, str]] = {
    "signature_subgraph_7": (_signature_subgraph_7, r"signature 'serving_default' names subgraph 7; the model has 1"),
    "fully_connected_to_split": (_fully_connected_to_split,
                                 r"operator \d+ of subgraph 0 \(SPLIT\) has 3 inputs; SPLIT takes 2"),
    "softmax_to_batch_matmul": (_softmax_to_batch_matmul,
                                r"operator \d+ of subgraph 0 \(BATCH_MATMUL\) has 1 input; BATCH_MATMUL takes 2"),
}


def crafted(src: Path, name: str, dest: Path) -> Path:
    model = unpack(src.read_bytes())
    CRAFTED[name][0](model)
    dest.write_bytes(pack(model))
    return dest


def build_rich_tflite(path: Path) -> Path:
    """A small model touching the ops converters emit most: CONV_2D, DEPTHWISE_CONV_2D, MAX_POOL_2D, RESHAPE,
    SPLIT, CONCATENATION, FULLY_CONNECTED, BATCH_MATMUL, MUL, ADD, MEAN, SOFTMAX; two inputs (one dynamic
    batch), two outputs, a SignatureDef. Built with the TF converter in this process (seconds)."""
    import tensorflow as tf

    rng = np.random.default_rng(1)
    k = tf.constant(rng.standard_normal((3, 3, 3, 4)).astype(np.float32))
    dk = tf.constant(rng.standard_normal((3, 3, 4, 1)).astype(np.float32))
    w = tf.constant(rng.standard_normal((68, 5)).astype(np.float32))
    b = tf.constant(rng.standard_normal(5).astype(np.float32))

    class Rich(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 3], tf.float32, name="image"),
                                      tf.TensorSpec([None, 4], tf.float32, name="x")])
        def serve(self, image, x):
            c = tf.nn.relu(tf.nn.conv2d(image, k, 1, "SAME"))
            d = tf.nn.max_pool2d(tf.nn.depthwise_conv2d(c, dk, [1, 1, 1, 1], "SAME"), 2, 2, "VALID")
            f = tf.reshape(d, [-1, 64])
            left, right = tf.split(f, 2, axis=1)
            h = tf.matmul(tf.concat([right, left, x], axis=1), w) + b
            gram = tf.matmul(tf.expand_dims(h, 2), tf.expand_dims(h, 1))
            return {"probs": tf.nn.softmax(h), "gram": tf.reduce_mean(gram, axis=2) * 0.5 + x[:, :1]}

    module = Rich()
    conv = tf.lite.TFLiteConverter.from_concrete_functions([module.serve.get_concrete_function()], module)
    path.write_bytes(conv.convert())
    return path


def build_control_flow_tflite(path: Path) -> Path:
    """WHILE (cond and body subgraphs), IF (two branch subgraphs), and a resource variable (CALL_ONCE of an
    init subgraph, VAR_HANDLE, READ_VARIABLE, ASSIGN_VARIABLE): six subgraphs whose indices can go wrong."""
    import tensorflow as tf

    class Loop(tf.Module):
        def __init__(self):
            super().__init__()
            self.v = tf.Variable(tf.ones([4]))

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x"),
                                      tf.TensorSpec([], tf.int32, name="n")])
        def serve(self, x, n):
            _, y = tf.while_loop(lambda i, y: i < n, lambda i, y: (i + 1, tf.nn.relu(y * 0.5 + 1.0)),
                                 [tf.constant(0), x])
            z = tf.cond(tf.reduce_sum(y) > 0, lambda: y * 2.0, lambda: y - 1.0)
            self.v.assign_add(tf.reduce_mean(z, 0))
            return {"y": z + self.v}

    module = Loop()
    conv = tf.lite.TFLiteConverter.from_concrete_functions([module.serve.get_concrete_function()], module)
    conv.experimental_enable_resource_variables = True
    path.write_bytes(conv.convert())
    return path


_BUILT: dict[str, Path] = {}


def tflite_models(tmp_path_factory) -> dict[str, Path]:
    """{'tiny': softmax(x @ W + b) as tests/security/_build makes it, 'rich': build_rich_tflite's,
    'control_flow': build_control_flow_tflite's}; built once per pytest process (each test module's
    fixture calls this)."""
    pytest.importorskip("ai_edge_litert")
    pytest.importorskip("tensorflow")
    if not _BUILT:
        folder = tmp_path_factory.mktemp("tflite_models")
        tiny = build_tflite(folder / "tiny.tflite", build_saved_model(folder / "tiny_saved_model"))
        _BUILT.update(tiny=tiny, rich=build_rich_tflite(folder / "rich.tflite"),
                      control_flow=build_control_flow_tflite(folder / "control_flow.tflite"))
    return dict(_BUILT)
