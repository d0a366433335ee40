"""Edge keras -> executorch (.pte): torch.export of the Keras model under the torch backend, lowered to XNNPACK.

The mobile path of the torch world: the model is exported as for the pt2 edge (modelkit.converters._torch_module,
the same wrapping and example inputs), then `to_edge_transform_and_lower(..., XnnpackPartitioner())` and
`.to_executorch()`; the program's `.buffer` is the .pte file. Three things differ from .pt2:

- ExecuTorch plans every tensor's memory ahead of time, so the batch is dynamic only up to a maximum
  (`max_batch`, default 64) and every other open dimension (a sequence length, an image side) up to `max_length`
  (default 128, or the longest size under it the eager model runs at: a table of 64 positions), recorded in the
  manifest (`dim_ranges`) and inside the program (modelkit.converters._executorch_dims). A layer that fixes such a
  dimension (a recurrent layer runs unrolled) is refused, naming it.
- Keras' torch backend makes its convolution kernels `contiguous(memory_format=channels_last)`, a layout-only
  copy that ExecuTorch's portable kernels reject at run time (and that keeps XNNPACK from taking the
  convolution); the copies are dropped from the graph (torch semantics do not depend on layout), and constants
  are folded so every convolution and matmul is delegated to XNNPACK.
- A .pte has no tensor names: the Signature travels inside it as a constant method `modelkit_signature`
  (its JSON as uint8 bytes), the maximum batch as `modelkit_max_batch` and the other open dimensions' ranges as
  `modelkit_dim_ranges`, so the engine
  (modelkit.runtime.executorch) needs neither Keras nor the manifest.

Quantization (option `quantize`): none (float32), int8 (pt2e with XNNPACKQuantizer: symmetric int8, per-channel
weights, calibrated on real samples; the hop judges it by the accuracy drop, as for TFLite's int8).
Runs in a child process with KERAS_BACKEND=torch, so a .keras trained under TensorFlow or JAX converts too.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import ConversionError, UnsupportedConversionError, first_line
from ..formats import Format
from ..runtime.executorch import (  # read back by the engine
    DIM_RANGES_METHOD,
    MAX_BATCH_METHOD,
    SIGNATURE_METHOD,
    TIED_DIMS_METHOD,
)
from . import _torch_dims
from ._executorch_dims import (
    bounded_export,
    check_largest,
    fitted_max_length,
    lowering_example,
    planned_bytes,
    reexport,
)
from .registry import Tolerance, converter

# XNNPACK's float32 kernels sum in another order than aten's: measured max abs error <= 1e-7 on the digits CNN
# and small dense nets; outputs where float32 itself errs more are judged at its own error (_float64)
TOLERANCE = Tolerance(atol=1e-4, min_cosine=0.9999)
MAX_BATCH = 64  # memory is planned for this batch: the engine allocates it once, at load
MIN_MAX_BATCH = 7  # verification runs batches 1 and 7
MAX_MAX_BATCH = 4096  # a plan for more rows than this is memory the engine would hold from load on, mostly unused
MAX_LENGTH = 128  # every other open dimension's largest size: a plan of max_batch x max_length positions
MIN_MAX_LENGTH = 16  # verification runs open dimensions at sizes up to 16
MAX_MAX_LENGTH = 65536  # a second of 48 kHz audio and then some; memory grows with it


def check_max_batch(value: Any) -> int:
    """`max_batch` (`modelkit convert --max-batch N`) as an int in MIN_MAX_BATCH..MAX_MAX_BATCH, else
    UnsupportedConversionError naming the range."""
    return _bounded(value, "max_batch", "largest batch", MIN_MAX_BATCH, "verification runs batches 1 and 7",
                    MAX_MAX_BATCH, MAX_BATCH)


def check_max_length(value: Any) -> int:
    """`max_length` (`modelkit convert --max-length N`): the largest size of every open dimension but the batch, an
    int in MIN_MAX_LENGTH..MAX_MAX_LENGTH, else UnsupportedConversionError naming the range."""
    return _bounded(value, "max_length", "largest size of an open dimension other than the batch", MIN_MAX_LENGTH,
                    "verification runs sizes up to 16", MAX_MAX_LENGTH, MAX_LENGTH)


def _bounded(value: Any, name: str, what: str, low: int, why_low: str, high: int, default: int) -> int:
    try:
        n = int(str(value).strip()) if not isinstance(value, (bool, float)) else None
    except ValueError:
        n = None
    if n is None or not low <= n <= high:
        raise UnsupportedConversionError(
            f"{name}={value!r}: the executorch program's {what} must be an integer from {low} ({why_low}) to "
            f"{high} (memory is planned for it at load); default {default}")
    return n


@converter(Format.KERAS, Format.EXECUTORCH, backend="torch", tolerance=TOLERANCE,
           options={"max_batch": MAX_BATCH, "max_length": None, "quantize": "none", "calibration_data": None})
def keras_to_executorch(src: Path, dest: Path, trust_unsafe_code: bool = False, max_batch: int = MAX_BATCH,
                        max_length: int | None = None, quantize: str = "none",
                        calibration_data: str | None = None) -> dict[str, Any]:
    from .. import manifest as _manifest
    from .._require import require
    from ..runtime.executorch import quiet_loggers
    from . import quantize as q
    from ._torch_module import load_wrapped, signature_json

    quiet_loggers()
    require("executorch.exir", "executorch", "ExecuTorch")
    mode = q.check_mode(quantize, Format.EXECUTORCH)
    fitted = max_length is None  # not asked for: MAX_LENGTH, or the longest size under it the model runs at
    max_batch, max_length = check_max_batch(max_batch), check_max_length(MAX_LENGTH if fitted else max_length)
    module, sig = load_wrapped(src, trust_unsafe_code)
    if fitted:
        max_length = fitted_max_length(module, sig, max_length, Path(src).name)
    program, accepted = bounded_export(module, sig, Path(src).name, max_batch, max_length)
    tied = _torch_dims.ties(program, sig)  # open dims the program computes as one size: the engine refuses others
    example = lowering_example(program, sig, accepted)  # None unless a size inside is 1 at the export's example
    if example is not None:
        try:
            program = reexport(program.module(), sig, accepted, Path(src).name, example)
        except ConversionError:  # not at those sizes: lowered as exported, and check_largest judges its plan
            example = None
    calibration = None
    if mode == "int8":
        calibration = q.calibration_inputs(_manifest.read(src), sig, calibration_data)
        program = _quantized(program, sig, calibration, accepted, Path(src).name, example)
    buffer, planned = _lower(program, sig, signature_json(sig), accepted, max_batch, Path(src).name,
                             fold=mode == "none", tied=tied)
    Path(dest).write_bytes(buffer)  # dest lies in the hop's .partial folder, renamed when the hop is done
    check_largest(dest, sig, accepted, max_batch, Path(src).name)
    import executorch.version as et_version

    from ._torch_module import versions

    out: dict[str, Any] = {
        "versions": {**versions(), "executorch": et_version.__version__},
        "dim_ranges": {f"{n}:{a}": r for (n, a), r in accepted.items()},
        "backend_delegate": "XnnpackBackend", "quantization": mode,
        # what the engine allocates at load, for the largest sizes; the open dims it takes at one size only
        "extra": {"planned_memory_bytes": planned, **({"tied_dims": tied} if tied else {})}}
    if calibration is not None:  # XNNPACKQuantizer: symmetric int8, per-channel weights (pt2e)
        out["calibration"] = {"samples": len(next(iter(calibration.values()))),
                              "data": calibration_data or "training split (source manifest)"}
    return out


def _quantized(program: Any, sig: Any, calibration: dict[str, Any], accepted: dict[Any, Any], src_name: str,
               example: Any) -> Any:
    """int8 by pt2e: the program folded (as for float32), XNNPACKQuantizer's observers inserted, calibrated on the
    samples, converted to quantize / dequantize pairs that XNNPACK fuses into int8 kernels; exported again."""
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from ._fx_islands import islands_kept_float
    from ._fx_linear import dense_as_linear
    from .quantize import iter_samples

    program = _folded(program)
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    quantizer.transform_for_annotation = _integer_scalars_kept(quantizer.transform_for_annotation)
    quantizer.annotate = islands_kept_float(_pads_share_quantization(quantizer.annotate))
    try:
        module = program.module()
        dense_as_linear(module)  # Keras' Dense (matmul + add) as the linear the quantizer takes
        prepared = prepare_pt2e(module, quantizer)
        with torch.no_grad():
            for feed in iter_samples(calibration, batch=20):
                prepared(*(torch.from_numpy(feed[n]) for n in sig.input_names))
        return reexport(convert_pt2e(prepared), sig, accepted, src_name, example)
    except (RuntimeError, TypeError, ValueError, AssertionError, KeyError, NotImplementedError) as exc:
        raise ConversionError(f"int8 quantization (XNNPACKQuantizer, pt2e) failed on {src_name}: "
                              f"{first_line(exc)}") from exc


def _integer_scalars_kept(transform: Any) -> Any:
    """XNNPACKQuantizer's transform for annotation, after which an add / mul of an integer tensor by a scalar keeps
    its integer type. The transform makes every such scalar a float32 constant, so that a float add can be
    quantized; on integer tensors that turned integer arithmetic into float: Keras' Embedding wraps negative ids
    (where(ids < 0, ids + n, ids)), and its indices became float ('Expected tensor for argument #1 'indices' to
    have one of the following scalar types: Long, Int'), so no model with an Embedding quantized."""
    import torch

    def transform_for_annotation(model: Any) -> Any:
        model = transform(model)
        for node in model.graph.nodes:
            out = node.meta.get("val")
            if node.target not in (torch.ops.aten.add.Tensor, torch.ops.aten.mul.Tensor) or out is None \
                    or out.dtype.is_floating_point:
                continue
            for arg in node.args:
                made = isinstance(arg, torch.fx.Node) and arg.op == "get_attr"
                if made and arg.target.startswith("_tensor_constant_"):  # the transform's name for them
                    value = getattr(model, arg.target).to(out.dtype)
                    model.register_buffer(arg.target, value)
                    arg.meta["val"] = out.fake_mode.from_tensor(value, static_shapes=True)
        model.recompile()
        return model

    return transform_for_annotation


def _pads_share_quantization(annotate: Any) -> Any:
    """XNNPACKQuantizer's annotation, after which a pad that adds no new value (zeros, or copies of the input's
    edge) shares its input's quantization, as the quantizer's own layout ops (permute, view, ...) do. Left alone,
    a pad of a quantized tensor (ZeroPadding2D, a causal or asymmetric 'same' Conv1D after another layer) was
    handed to XNNPACK with an int8 input and a float output, which it refuses at load ("Failed to create
    StaticConstantPad node ... xnn_status_invalid_parameter"); the quantized pad is exact: 0 is a zero point."""
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer_utils import propagate_annotation
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation, SharedQuantizationSpec

    key = "quantization_annotation"
    pads = (torch.ops.aten.pad.default, torch.ops.aten.constant_pad_nd.default)

    def adds_no_value(node: Any) -> bool:
        if node.target == torch.ops.aten.constant_pad_nd.default:
            return float(node.args[2] if len(node.args) > 2 else node.kwargs.get("value", 0.0)) == 0.0
        mode = node.args[2] if len(node.args) > 2 else node.kwargs.get("mode", "constant")
        value = node.args[3] if len(node.args) > 3 else node.kwargs.get("value")
        return mode != "constant" or not value

    def share_pads(model: Any) -> int:
        shared = 0
        for node in model.graph.nodes:
            if node.op != "call_function" or node.target not in pads or not adds_no_value(node):
                continue
            source = node.args[0]
            made = source.meta.get(key)
            if made is None or made.output_qspec is None or getattr(node.meta.get(key), "_annotated", False):
                continue
            spec = SharedQuantizationSpec(source)
            node.meta[key] = QuantizationAnnotation(input_qspec_map={source: spec}, output_qspec=spec,
                                                    _annotated=True)
            shared += 1
        return shared

    def annotate_pads(model: Any) -> Any:
        model = annotate(model)
        while share_pads(model):  # and the layout ops after them (a permute to NCHW), as the quantizer's own pass
            propagate_annotation(model)
        return model

    return annotate_pads


def _lower(program: Any, sig: Any, signature: str, accepted: dict[Any, Any], max_batch: int, src_name: str,
           fold: bool = True, tied: list[list[str]] | None = None) -> tuple[bytes, int]:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    from torch._export.verifier import SpecViolationError  # an op outside the Core ATen set ExecuTorch lowers

    from ._executorch_dims import partitioner_configs, prim_sym_ops, ranges_json, set_bounds
    from ._xnnpack_passes import patterns_only_where_they_can_match, softmax_in_logical_layout

    if fold:  # a quantized program is folded before quantization: folding again would float its int8 weights
        program = _folded(program)
    prim_sym_ops(program)
    if not fold:  # int8: the out variants of (de)quantize ops left outside XNNPACK, run by the portable runtime
        import executorch.kernels.quantized  # noqa: F401
    constants = {SIGNATURE_METHOD: _bytes(signature), MAX_BATCH_METHOD: max_batch}
    ranges = ranges_json(sig, accepted)
    if ranges != "{}":  # open dims other than the batch: the engine refuses sizes past them
        constants[DIM_RANGES_METHOD] = _bytes(ranges)
    if tied:  # open dims the program computes as one size: the engine refuses inputs where they differ
        constants[TIED_DIMS_METHOD] = _bytes(json.dumps(tied))
    try:
        with softmax_in_logical_layout(), patterns_only_where_they_can_match():
            edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner(configs=partitioner_configs())],
                                               constant_methods=constants)
        set_bounds(edge.exported_program(), sig, accepted, max_batch)
        made = edge.to_executorch()
        return bytes(made.buffer), planned_bytes(made.executorch_program)
    except Exception as exc:
        # the lowering's own errors, and the bare Exception its pass manager raises naming a pass (the cause says why)
        bare = type(exc) is Exception
        if not bare and not isinstance(exc, (RuntimeError, TypeError, ValueError, AssertionError, KeyError,
                                             NotImplementedError, SpecViolationError)):
            raise
        cause = f" ({type(exc.__cause__).__name__}: {first_line(exc.__cause__)})" if bare and exc.__cause__ else ""
        raise ConversionError(f"ExecuTorch could not lower {src_name}: {first_line(exc)}{cause}") from exc


def _folded(program: Any) -> Any:
    """The program made functional (Keras' BatchNormalization updates in place: mul_, ...), without layout-only
    copies, its constants folded: what both XNNPACK lowering and the int8 quantizer take."""
    from executorch.exir.passes.constant_prop_pass import constant_prop_pass

    from ._executorch_graph import (
        cats_of_one_dtype,
        contiguous_constants,
        drop_layout_copies,
        drop_weight_asserts,
        splits_as_slices,
    )

    program = program.run_decompositions({})
    drop_weight_asserts(program)
    drop_layout_copies(program)
    splits_as_slices(program)
    cats_of_one_dtype(program)
    return contiguous_constants(constant_prop_pass(program))


def _bytes(text: str) -> Any:
    import torch

    return torch.tensor(list(text.encode()), dtype=torch.uint8)
