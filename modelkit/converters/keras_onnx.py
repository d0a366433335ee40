"""Edge keras -> onnx: trace the Keras model as a TF function and convert it with tf2onnx.

Runs under the TensorFlow backend (in a child process when the caller's backend differs), so a
.keras file trained under any backend converts. Inputs keep the Keras input names, outputs take the
Keras output names, and every dynamic dimension stays symbolic: the batch is named 'batch', any other
`<tensor>_<axis>` (a sequence length of input 'tokens' is 'tokens_1').
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from .._onnx import onnxslim_version, slim
from .._quiet import engine_chatter_swallowed
from ..errors import ConversionError, first_line
from ..formats import Format
from .registry import Tolerance, converter

OPSET = 17  # pinned: supported by onnxruntime 1.32, TVM 0.27's Relax importer and tf2onnx 1.17

# tf2onnx folds BatchNorm into Conv and reorders float sums: ~1e-6 on small nets; 1e-4 leaves room for
# deep ones (MobileNetV2) while still catching any real mistake (a wrong layout is off by > 1e-1).
TOLERANCE = Tolerance(atol=1e-4, min_cosine=0.9999)
TF2ONNX_TRIES = 3  # conversions of one model while its output rank differs from Keras' (wrong_output_rank)


@converter(Format.KERAS, Format.ONNX, backend="tensorflow", tolerance=TOLERANCE,
           options={"opset": OPSET, "quantize": "none", "calibration_data": None, "onnxslim": False})
def keras_to_onnx(src: Path, dest: Path, opset: int = OPSET, trust_unsafe_code: bool = False,
                  quantize: str = "none", calibration_data: str | None = None,
                  onnxslim: bool = False) -> dict[str, Any]:
    """onnxslim=True simplifies the fp32 graph with onnxslim (constant folding, fusions) before saving."""
    import onnx
    import tensorflow as tf
    import tf2onnx
    from keras.src.export.tf2onnx_lib import patch_tf2onnx

    from ..keras_io.files import keras_signature
    from ._tf_function import shared_model, shared_serving_function
    from ._tf_lowering import lowerings

    model = shared_model(src, trust_unsafe_code)  # loaded once per process for all TF-based hops
    sig = keras_signature(model)
    patch_tf2onnx()  # keras' shim for tf2onnx on numpy 2
    register_erfc()
    register_where_select()
    with lowerings():  # lowerings TFLite can express too (the TF-based edges trace alike)
        fn, specs = shared_serving_function(model, sig, as_dict=False)
        for _ in range(TF2ONNX_TRIES):
            try:  # tf2onnx logs a line per op it cannot map: its exception says what matters, in one line
                with engine_chatter_swallowed():
                    proto, _ = tf2onnx.convert.from_function(fn, input_signature=specs, opset=int(opset))
            except Exception as exc:  # tf2onnx raises assorted errors on graphs it cannot map: the next route goes on
                raise ConversionError(f"tf2onnx could not convert {Path(src).name}: {type(exc).__name__}: "
                                      f"{first_line(exc)}") from exc
            if wrong_output_rank(proto, sig) is None:  # else converted again; the last try goes to parity
                break
    rename_outputs(proto, sig.output_names)
    unsqueeze_nothing_as_identity(proto)
    proto, mode = save_onnx(proto, src, dest, sig, onnxslim, quantize, calibration_data)
    return {"opset": int(opset), "ir_version": int(proto.ir_version), "quantization": mode,
            "versions": {"tensorflow": tf.__version__, "tf2onnx": tf2onnx.__version__, "onnx": onnx.__version__,
                         **({"onnxslim": onnxslim_version()} if onnxslim else {})}}


def save_onnx(proto: Any, src: Path, dest: Path, sig: Any, onnxslim: bool, quantize: str,
              calibration_data: str | None) -> tuple[Any, str]:
    """What every keras -> onnx route does last: name the dynamic dims, slim (optional), check, save, quantize
    in place (none / dynamic-int8 / int8 static QDQ); returns the saved proto and the quantization mode."""
    from importlib.metadata import PackageNotFoundError, version

    import onnx

    from .quantize import quantize_onnx_file

    inputs_passed_through(proto, Path(src).name)
    name_dynamic_dims(proto)
    proto.producer_name = "modelkit"
    try:  # not the exporter's own ("1.17.0 None" from tf2onnx), which read as modelkit's version
        proto.producer_version = version("modelkit")
    except PackageNotFoundError:  # a source tree that is not installed
        proto.producer_version = ""
    if onnxslim:
        proto = slim(proto)
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:  # e.g. a TF op the exporter left in the graph as it was
        raise ConversionError(f"the exporter wrote an invalid ONNX graph for {Path(src).name}: "
                              f"{first_line(exc)}") from exc
    onnx.save(proto, str(dest))
    return proto, quantize_onnx_file(src, dest, sig, quantize, calibration_data)


def wrong_output_rank(proto: Any, sig: Any) -> str | None:
    """Which graph output (in Keras' order) has another rank than the Keras output, None when all agree.

    tf2onnx's graph optimizers do not always give the same graph for the same function: about one
    conversion in 60 of nc69's super-resolution model lost the Squeeze that ends a Transpose rewritten as
    Unsqueeze -> Reshape -> Squeeze, and wrote a 5-D output for a 4-D one at every size. Parity refused that
    graph (and the next route was taken); a rank checked here lets keras_to_onnx convert again instead. A rank
    that stays different (a custom layer's compute_output_shape that is wrong) is left to parity, which
    compares the values Keras computes."""
    for out, spec in zip(proto.graph.output, sig.outputs):
        tt = out.type.tensor_type
        if tt.HasField("shape") and len(tt.shape.dim) != len(spec.shape):
            return f"'{spec.name}' has rank {len(tt.shape.dim)} in the ONNX graph, {len(spec.shape)} in Keras"
    return None


def rename_outputs(proto: Any, names: list[str]) -> None:
    """Give graph outputs the Keras output names (tf2onnx names them after TF tensors)."""
    graph = proto.graph
    if len(graph.output) != len(names):
        raise ValueError(f"tf2onnx produced {len(graph.output)} outputs for {len(names)} Keras outputs")
    mapping = {o.name: n for o, n in zip(graph.output, names)}
    for node in graph.node:
        for i, name in enumerate(node.output):
            if name in mapping:
                node.output[i] = mapping[name]
        for i, name in enumerate(node.input):
            if name in mapping:
                node.input[i] = mapping[name]
    for o in graph.output:
        o.name = mapping[o.name]


def inputs_passed_through(proto: Any, src_name: str) -> int:
    """Let each graph output that is a graph input (a serving model returning its request key as it came) be that
    input itself; how many there were. The exporters write `Identity(key) -> key`, which defines 'key' a second
    time, and the checker refused the graph (nc143: "Graph must be in single static assignment (SSA) form"). An
    output with an input's name and another value cannot be held by one ONNX graph: ConversionError."""
    graph = proto.graph
    inputs = {i.name for i in graph.input}
    producers = {name: node for node in graph.node for name in node.output}
    done = 0
    for out in graph.output:
        node = producers.get(out.name) if out.name in inputs else None
        if node is None:
            continue
        value = node.input[0] if node.op_type == "Identity" else None
        while value is not None and value != out.name and getattr(producers.get(value), "op_type", "") == "Identity":
            value = producers[value].input[0]
        if value != out.name:
            raise ConversionError(f"{src_name}: output '{out.name}' has the name of an input but another value, and "
                                  "an ONNX graph holds one value per name; rename the output (or the input) in the "
                                  "Keras model")
        graph.node.remove(node)
        done += 1
    return done


def unsqueeze_nothing_as_identity(proto: Any) -> int:
    """Write each Unsqueeze of no axes (an initializer of size 0) as the Identity it is; how many there were.
    tf2onnx writes them for an einsum of three operands (nc94's bilinear score `einsum("bi,ij,bj->b")`; nc46's
    mixture of experts), valid ONNX that onnxruntime and TVM run, and OpenVINO's frontend adds an axis for them:
    "Check 'input_order_shape[0].compatible(input_rank...)' failed" on the Transpose after it."""
    import math

    empty = {i.name for i in proto.graph.initializer if len(i.dims) == 1 and math.prod(i.dims) == 0}
    done = 0
    for node in proto.graph.node:
        if node.op_type == "Unsqueeze" and len(node.input) == 2 and node.input[1] in empty:
            node.op_type = "Identity"
            del node.input[1]
            done += 1
    return done


def name_dynamic_dims(proto: Any) -> None:
    """Name the dynamic dimensions of graph inputs and outputs: the first 'batch', any other
    `<tensor>_<axis>` (tf2onnx calls them 'unk__N'). Distinct names promise no equality between tensors
    (an output's length may differ from its input's); one name per input axis keeps each symbolic."""
    for vi in list(proto.graph.input) + list(proto.graph.output):
        for axis, dim in enumerate(vi.type.tensor_type.shape.dim):
            if not dim.HasField("dim_value"):
                dim.dim_param = "batch" if axis == 0 else f"{vi.name}_{axis}"



@functools.cache  # once per process: the handler stays registered
def register_where_select() -> None:
    """Write every float Select of TensorFlow as ONNX's Where. tf2onnx 1.17 writes it as `c * a + (1 - c) * b`
    unless it sees a NaN guard, and an Inf or NaN in the branch not taken (`where(u == 1, x, x / log(u))`, a safe
    division) then makes the output NaN, where TensorFlow picks the other branch."""
    from tf2onnx.handler import tf_op
    from tf2onnx.onnx_opset.controlflow import Select

    @tf_op(["Select", "SelectV2"])
    class WhereSelect:  # noqa: F841 - registered by the decorator
        @classmethod
        def version_9(cls, ctx: Any, node: Any, **kwargs: Any) -> None:
            node.set_attr("handles_nan", True)  # tf2onnx's own flag for "keep Where"; not written to the graph
            Select.version_9(ctx, node, **kwargs)


def register_erfc() -> None:
    """A tf2onnx handler for TF's Erfc (Keras' exact `gelu` under TensorFlow), which tf2onnx 1.17 lacks:
    erfc(x) = 1 - erf(x), with ONNX's Erf. Absolute error stays at float32 resolution (~1e-7)."""
    from tf2onnx import constants, utils
    from tf2onnx.handler import tf_op

    if any("Erfc" in handlers for handlers in tf_op.get_opsets().get(constants.ONNX_DOMAIN, [])):
        return  # registered already (by an earlier hop in this process, or by a newer tf2onnx)

    @tf_op("Erfc")
    class Erfc:  # noqa: F841 - registered by the decorator
        @classmethod
        def version_9(cls, ctx: Any, node: Any, **kwargs: Any) -> None:
            import numpy as np

            node.type = "Erf"
            dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(node.input[0]))
            one = ctx.make_const(utils.make_name(f"{node.name}_one"), np.array(1, dtype=dtype))
            sub = ctx.insert_new_node_on_output("Sub", node.output[0], name=utils.make_name(node.name),
                                                inputs=[one.output[0], node.output[0]])
            ctx.copy_shape(node.output[0], sub.output[0])
