"""ONNX -> TVM shared library: simplify, import into Relax, (tune,) compile, export.

Batch policy: a library keeps a dynamic batch dimension when the target allows it and nothing
asks for a fixed one; `batch=N` or tuning (MetaSchedule measures concrete shapes) fixes the batch,
and the library's signature then says so. Other dynamic dims (a sequence length) stay symbolic in a
dynamic-batch library (Relax shape variables) and are refused, typed, with a fixed batch or when the
importer cannot keep them (Signature.bind refuses other batch sizes before the VM
sees them). Verification of a fixed-batch library runs at that batch.
"""
from __future__ import annotations

import hashlib
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from ... import manifest as _manifest
from ..._onnx import onnxslim_version, opset_of
from ..._quiet import engine_chatter_swallowed
from ...errors import (
    ConversionError,
    EngineNotInstalledError,
    FixedShapeError,
    RemoteDeviceError,
    UnsupportedConversionError,
    first_line,
)
from ...formats import Format
from ...keras_io.inputs import open_specs_text
from ...runtime.tvm_cuda import kernel_compiler
from ...runtime.tvm_host import tvm_compiler_missing, tvm_cuda_missing
from ...spec import Signature, TensorSpec
from .. import registry
from . import cross, default_schedule, tuning
from .fix_dims import fix_input_dims

_ONNX_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 9: "bool",
                10: "float16", 11: "float64"}


def onnx_signature(proto: Any) -> Signature:
    """The graph's inputs (initializers excluded) and outputs, with their ONNX names, in graph order."""
    inits = {i.name for i in proto.graph.initializer}

    def spec(vi: Any) -> TensorSpec:
        tt = vi.type.tensor_type
        if tt.elem_type not in _ONNX_DTYPES:
            raise UnsupportedConversionError(f"tensor '{vi.name}': ONNX element type {tt.elem_type} is not "
                                             "supported by the TVM path")
        dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tt.shape.dim)
        return TensorSpec(vi.name, dims, _ONNX_DTYPES[tt.elem_type])

    return Signature(tuple(spec(i) for i in proto.graph.input if i.name not in inits),
                     tuple(spec(o) for o in proto.graph.output))


# formats that run any size of an open dim (executorch: up to a planned maximum)
KEEP_DYNAMIC = ("onnx (onnxruntime), saved_model, tflite, openvino, pt2, torchscript, "
                "executorch (up to --max-length)")


def fix_batch(sig: Signature, batch: int | None) -> Signature:
    """The signature with dim 0 set to `batch` (None keeps it dynamic). Other dynamic dims stay dynamic in
    a dynamic-batch library; a fixed batch (tuning, a target without dynamic shapes) needs fixed shapes."""
    def one(s: TensorSpec, is_input: bool) -> TensorSpec:
        open_axes = [i for i, d in enumerate(s.shape) if i > 0 and d is None]
        if is_input and open_axes and batch is not None:
            raise FixedShapeError(
                f"input '{s.name}' {s.shape_str()}: dimension {open_axes[0]} is dynamic, and a TVM library with "
                f"a fixed batch (batch={batch}: tuning, or a target without dynamic shapes) is compiled for fixed "
                f"shapes only: fix them with {open_specs_text(sig, 64)}, compile untuned for a "
                f"target with a dynamic batch, or use a format that keeps it dynamic: {KEEP_DYNAMIC}")
        shape = s.shape if batch is None or not s.shape or s.shape[0] is not None else (batch, *s.shape[1:])
        return TensorSpec(s.name, shape, s.dtype)

    return Signature(tuple(one(s, True) for s in sig.inputs), tuple(one(s, False) for s in sig.outputs))


def choose_batch(target: registry.Target, batch: int | None, tuned: bool) -> int | None:
    """None = dynamic batch. Tuning needs a fixed batch (default 1); so does a target without dynamic shapes."""
    if batch is not None:
        if int(batch) < 1:
            raise ConversionError(f"batch must be >= 1, got {batch}")
        return int(batch)
    if tuned or not target.dynamic_batch:
        return 1
    return None


def check_toolchain(target: registry.Target) -> None:
    """Fail before any work when the target's compiler is missing (TVM's own, cross g++, a CUDA compiler)."""
    why = tvm_compiler_missing()
    if why is not None:
        raise EngineNotInstalledError(f"compiling for '{target.name}' needs TVM's compiler: {why}")
    if target.device == "cuda":
        # where TVM's CUDA runtime loads (a GPU build host), TVM compiles the kernels now, with NVRTC or nvcc;
        # elsewhere it stores their source, compiled by the GPU server at load (runtime.tvm_cuda): nothing needed
        if tvm_cuda_missing() is None and kernel_compiler() is None:
            raise EngineNotInstalledError(
                f"target '{target.name}': TVM compiles the CUDA kernels on this GPU machine now, and nothing here "
                "can: install the CUDA toolkit's nvcc, or NVRTC (pip install cuda-bindings)")
        return
    cross.compiler_for(target)


def compile_onnx(src: Path, dest: Path, target: str | dict[str, Any] = "server-cpu", batch: int | None = None,
                 trials: int | None = None, budget: str | float | None = None,
                 cache_dir: str | None = None, rpc: str | None = None,
                 device_key: str | None = None, input_spec: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Compile the ONNX model at src into the library dest; write a provisional manifest beside it.

    rpc ('HOST:PORT' of a TVM RPC tracker) and device_key tune on the device registered there (rpc.py).
    input_spec ([{"name", "shape"}]) fixes open dimensions of the graph's inputs first (fix_dims.py).
    Returns the edge's info (versions, opset, target, extra) for the hop's manifest.
    """
    import onnx
    import tvm

    tgt = registry.get(target)
    check_toolchain(tgt)
    budget_s = tuning.parse_budget(budget)
    trials = int(trials) if trials else None
    tuned = trials is not None or budget_s is not None
    fixed = choose_batch(tgt, batch, tuned)
    device = remote_device(tgt, rpc, device_key, tuned)
    t0 = time.perf_counter()
    proto = onnx.load(str(src))
    if input_spec:
        proto = fix_input_dims(proto, input_spec, src.name)
    batch_note = None
    tvm_target = tvm.target.Target(tgt.tvm)
    try:
        mod, sig, proto = _import_and_legalize(proto, src.name, fixed, tvm_target)
    except ConversionError as exc:
        if fixed is not None or isinstance(exc, UnsupportedConversionError):  # a missing op, an open length
            raise
        # TVM cannot keep the batch dynamic in this graph (shape arithmetic feeding a Reshape, e.g. attention
        # heads; an Expand to a shape computed from the batch, e.g. Keras' take_along_axis, whose output shape
        # legalization cannot know): compile at batch 1, where the shapes fold to constants, and say so
        mod, sig, proto = _import_and_legalize(proto, src.name, 1, tvm_target)
        fixed, batch_note = 1, f"compiled at a fixed batch of 1: TVM cannot keep the batch dynamic in this " \
                               f"graph ({_error_text(exc.__cause__)}); for another batch, " \
                               f"`modelkit compile {src.name} --batch N`"
        print(f"{src.name}: {batch_note}", file=sys.stderr, flush=True)
    tune_info = None
    database = None
    if tuned:
        if tgt.cross and device is None:
            raise UnsupportedConversionError(f"tuning measures candidates on this machine, so it needs a target "
                                             f"that runs here; '{tgt.name}' is for {tgt.arch}/{tgt.device} "
                                             "(tune on the device over TVM RPC: --rpc HOST:PORT --device-key KEY)")
        model_sha = hashlib.sha256(proto.SerializeToString(deterministic=True)).hexdigest()
        key = tuning.cache_key(model_sha, tgt.tvm, int(fixed or 1), tvm.__version__)  # this model's ledger
        db_dir = tuning.database_dir(cache_dir, tgt.tvm, tvm.__version__)  # shared by every model
        if device is not None:
            from . import rpc as _rpc

            _rpc.check(device)  # before a session is asked for: a key nobody registered would wait forever
            tvm_target = _rpc.with_cores(tvm_target, device)  # a cross target does not say how many
        database, tune_info = tuning.tune(mod, tvm_target, db_dir, trials, budget_s, model_key=key, device=device)
    t1 = time.perf_counter()
    with engine_chatter_swallowed():  # and while lowering
        executable = _build(mod, tvm_target, database)
    _export(executable, dest, tgt)
    from ...trust import record_library

    record_library(dest)  # compiled here: modelkit.load runs it (by content, so copies stay trusted)
    header = cross.check_library_arch(dest, tgt.arch)
    extra = {"tvm_target": tgt.tvm, "tvm_version": tvm.__version__, "arch": tgt.arch, "device": tgt.device,
             "batch": fixed, "dynamic_batch": fixed is None, "batch_note": batch_note, "elf": header,
             "compile_seconds": round(time.perf_counter() - t1, 2), "import_seconds": round(t1 - t0, 2),
             "tuning": tune_info, "detected": tgt.detected or None, "input_spec": input_spec or None,
             "verified": _verified(tgt)}
    if tgt.cross and tgt.device == "cpu":
        _verify_emulated(src, dest, sig, tgt, extra)
    _write_manifest(src, dest, tgt, sig, extra)
    return {"opset": opset_of(proto), "ir_version": int(proto.ir_version), "target": tgt.name, "extra": extra,
            "versions": {"tvm": tvm.__version__, "onnx": onnx.__version__, "onnxslim": onnxslim_version()}}


def remote_device(tgt: registry.Target, rpc: str | None, device_key: str | None, tuned: bool) -> Any:
    """The rpc.Device to tune on (None: tune here), its candidates linked by the target's compiler."""
    if rpc is None and device_key is None:
        return None
    from . import rpc as _rpc

    if rpc is None:
        raise RemoteDeviceError("--device-key needs --rpc HOST:PORT: the TVM RPC tracker the device "
                                     "registered with")
    if not tuned:
        raise RemoteDeviceError("--rpc measures tuning candidates on the device: add --tune (or --trials "
                                     "/ --budget)")
    return _rpc.device(rpc, device_key, cross.compiler_for(tgt))


def _import_and_legalize(proto: Any, name: str, batch: int | None, tvm_target: Any) -> tuple[Any, Signature, Any]:
    """_import, then _prepare: a shape the importer left unknown fails there, as a ConversionError."""
    mod, sig, proto = _import(proto, name, batch)
    with engine_chatter_swallowed():  # TVM's C++ warnings while legalizing (e.g. a gather's "Fast mode" notice)
        try:
            return _prepare(mod, tvm_target), sig, proto
        except (AssertionError, RuntimeError, ValueError, TypeError) as exc:  # a shape the importer left unknown
            text = _error_text(exc)
            typed = _open_dim_refusal(sig, name, f"it could not legalize the import ({text})")  # no retry helps
            if typed is None:
                typed = ConversionError(f"TVM could not legalize {name} (after its ONNX import): {text}")
                typed.another_onnx = "graph"
            raise typed from exc


def _import(proto: Any, name: str, batch: int | None) -> tuple[Any, Signature, Any]:
    """Simplify and import into Relax: (module, signature, simplified graph). With a fixed batch the
    graph's inputs get their concrete shapes first, so that onnxslim folds the shape arithmetic (TVM's
    importer rejects a Reshape whose shape is computed, as exporters write for attention heads). A rejected
    graph raises UnsupportedConversionError for a missing operator or an open non-batch dimension, else
    ConversionError (the importer's own error as its cause)."""
    from tvm.relax.frontend.onnx import from_onnx

    from ..._onnx import slim
    from ...converters.onnx_stft import stft_as_conv
    from .loops import reverse_sequences, unroll_loops
    from .lower_rnn import lower_rnns
    from .matmuls import gemms_as_matmuls, unfolded_matmuls
    from .mends import mend_onehot, mend_picked_slices, mend_resize
    from .reshapes import constant_reshapes
    from .same_pads import symbolic_same_padding
    from .sizes import counted_ranges, traced_shapes
    from .slices import constant_slices
    from .symbolic import symbolic_batch

    sig = fix_batch(onnx_signature(proto), batch)
    if batch is not None:
        proto = fix_input_dims(proto, [s.to_dict() for s in sig.inputs], name)  # the batch too (fix_dims.py)
    proto = slim(proto)  # TVM's importer rejects some exporters' Reshape patterns until simplified
    proto = mend_resize(proto)  # an exporter's Resize pattern it rejects, mended (mends.py)
    proto, _ = mend_picked_slices(proto)  # and its x[:, -1] of an open length
    proto, _ = stft_as_conv(proto)  # nor STFT (a Keras MelSpectrogram): the Conv1D it is (converters/onnx_stft.py)
    proto, unrolled = unroll_loops(proto)  # a recurrent loop of fixed length (the importer has no Loop)
    proto, reversed_ = reverse_sequences(proto)  # a masked backward RNN (nor ReverseSequence)
    proto, rnns, rnns_left = lower_rnns(proto)  # ONNX LSTM / GRU / RNN of a fixed length (nor those)
    if unrolled or reversed_ or rnns:
        proto = slim(proto)  # fold each copy's iteration-number arithmetic
    if batch is None:  # Reshape targets and Slice bounds computed from an open size, made constant (reshapes.py,
        proto, _ = counted_ranges(proto)  # positions over an open length (a causal mask's), and masks expanded
        proto, _ = traced_shapes(proto)  # to shapes computed from it, traced to their axes first (sizes.py)
        proto, _ = gemms_as_matmuls(proto)  # slices.py: attention heads, GroupNormalization, Conv1DTranspose),
        proto, _ = unfolded_matmuls(proto)  # after attention's batch-folding Reshapes are unfolded (matmuls.py)
        proto, _ = constant_reshapes(proto)
        proto, _ = constant_slices(proto)
    if not reversed_:  # a recurrent layer's zero state and gate slices keep the batch symbolic (symbolic.py);
        proto, _ = symbolic_batch(proto)  # not with a rewritten ReverseSequence, which then fails tvm.compile
    # OneHot's mends last: its Cast looks like a no-op to the simplifier, which constant_reshapes runs (nc71)
    proto = mend_onehot(proto)
    shape_dict = {s.name: list(s.shape) for s in sig.inputs} if batch is not None else None
    try:
        # the importer prints the operator it failed on, and C++ warnings; `same` padding of an open size: same_pads.py
        with engine_chatter_swallowed(), symbolic_same_padding():
            try:
                return from_onnx(proto, shape_dict=shape_dict, keep_params_in_input=False), sig, proto
            except Exception as exc:
                # the importer's frames hold its BlockBuilder, which warns on descriptor 2 when freed ("destroyed
                # with remaining blocks!"): freed here, while that descriptor is still swallowed
                traceback.clear_frames(exc.__traceback__)
                raise
    except Exception as exc:  # the importer raises assorted TVM / Python errors: re-raise typed, not swallowed
        text = _error_text(exc)
        open_dims = _open_dims(sig)
        if "not supported for frontend ONNX" in text:  # e.g. Loop (a recurrent layer), whatever the shapes
            hint = ""
            if "Loop" in text and open_dims:
                hint = (f"; a Loop of a fixed number of steps is unrolled, and dimension '{open_dims[0][0].name}' dim "
                        f"{open_dims[0][1]} is open: fix it when converting from Keras (--input-spec)")
            hint += "".join(f"; {why}" for why in rnns_left)  # a recurrent node not unrolled, and why
            typed: ConversionError = UnsupportedConversionError(
                f"TVM's ONNX importer cannot convert {name}: {text}; the ONNX model itself runs with onnxruntime{hint}")
            if "Loop" in text and not open_dims and not rnns_left:
                typed.another_onnx = "loop"  # edge.py: another exporter's ONNX may do
        elif open_dims:
            typed = _open_dim_refusal(sig, name, f"its ONNX importer rejected it ({text})")
        else:
            typed = ConversionError(f"TVM's ONNX importer rejected {name}: {text}")
            typed.another_onnx = "graph"
        raise typed from exc


def _open_dims(sig: Signature) -> list[tuple[TensorSpec, int]]:
    """(input, axis) of each open dimension past the batch."""
    return [(s, i) for s in sig.inputs for i, d in enumerate(s.shape) if i > 0 and d is None]


def _open_dim_refusal(sig: Signature, name: str, why: str) -> UnsupportedConversionError | None:
    """The typed refusal of a graph TVM failed on while an input has an open dimension past the batch (None
    when none has): that dimension named, the formats that keep it open, and the --input-spec that fixes it."""
    open_dims = _open_dims(sig)
    if not open_dims:
        return None
    spec, axis = open_dims[0]
    return UnsupportedConversionError(
        f"TVM cannot compile {name}, whose dimension '{spec.name}' dim {axis} is dynamic: {why}; "
        f"formats that keep it dynamic: {KEEP_DYNAMIC}; for TVM, fix it with {open_specs_text(sig, 64)} (modelkit "
        f"compile {name} or MODEL.keras, or modelkit convert MODEL.keras --to tvm)")


def _error_text(exc: BaseException | None) -> str:
    """"Type: first line" of a TVM error (the importer's, a build's), for one-line messages. An operator that TVM
    prints whole (`ir.Op(span=None, ..., name="relax.concat", ...)`, some 300 characters) is given by its name."""
    import re

    text = re.sub(r'ir\.Op\(span=.*?name="([^"]+)".*?support_level=\d+\)', r"\1",
                  first_line(exc) if str(exc).strip() else "")
    return f"{type(exc).__name__}: {text}"


def _verify_emulated(src: Path, dest: Path, sig: Signature, tgt: registry.Target, extra: dict[str, Any]) -> None:
    """Run an aarch64 library under qemu against onnxruntime here, when that environment exists."""
    from . import emulate

    why = emulate.available() if tgt.arch == "aarch64" else f"no TVM runtime for {tgt.arch} to emulate"
    if why is not None:
        extra["not_run_because"] = why
        return
    from .edge import TOLERANCE

    print(f"verifying {dest.name} under qemu-aarch64 against {src.name} ...", file=sys.stderr, flush=True)
    report = emulate.verify_under_qemu(src, dest, sig, TOLERANCE)
    extra["emulated_parity"] = report.to_dict()
    report.raise_if_failed()
    extra["verified"] = "parity-under-qemu-aarch64"
    print(f"qemu-aarch64: {report.summary()}", file=sys.stderr, flush=True)


def _verified(tgt: registry.Target) -> str:
    """What the hop's verification can prove for this target on this machine (see docs/tvm.md)."""
    if not tgt.cross:
        return "parity"
    if tgt.device == "cuda":
        return "compiled-only: load it with device='cuda' on the GPU server (its CUDA kernels compile there, at load)"
    return "elf-architecture-only"


def _prepare(mod: Any, tvm_target: Any) -> Any:
    """Legalize and fuse (the pipeline MetaSchedule extracts its tasks from)."""
    import tvm
    from tvm.relax import transform as T
    from tvm.relax.pipeline import zero_pipeline

    with tvm_target:
        return tvm.transform.Sequential([T.DecomposeOpsForInference(), T.CanonicalizeBindings(),
                                         zero_pipeline()])(mod)


def _build(mod: Any, tvm_target: Any, database: Any) -> Any:
    import tvm
    from tvm.relax import transform as T

    if database is not None:
        with tvm_target, database, tvm.transform.PassContext(opt_level=3):
            mod = T.MetaScheduleApplyDatabase()(mod)
    # untuned, and any task a database has no record for (those it has are marked scheduled, and kept):
    # parallel + vectorized default schedules instead of TVM's serial, scalar loop nests (docs/tvm.md)
    with engine_chatter_swallowed():
        scheduled, count = default_schedule.apply(mod, tvm_target)
    try:
        return tvm.compile(scheduled, target=tvm_target)
    except Exception as exc:  # TVM raises its own error types from C++: re-raise typed
        first = exc
    if count:  # a default schedule LLVM / TIR lowering rejects: the plain loop nests still compile
        print(f"the default schedules did not compile ({_error_text(first)}); compiling without them",
              file=sys.stderr, flush=True)
        try:
            return tvm.compile(mod, target=tvm_target)
        except Exception as exc:  # noqa: BLE001 - reported typed below, with the first error as the cause
            first = exc
    raise ConversionError(f"tvm.compile failed for {tvm_target.kind.name}: {_error_text(first)}") from first


def _export(executable: Any, dest: Path, tgt: registry.Target) -> None:
    from tvm.support import cc

    cxx = cross.compiler_for(tgt)
    if cxx is None:
        executable.export_library(str(dest))
    else:
        executable.export_library(str(dest), fcompile=cc.cross_compiler(cxx))


def _write_manifest(src: Path, dest: Path, tgt: registry.Target, sig: Signature, extra: dict[str, Any]) -> None:
    """A provisional manifest beside the library (the engine needs its signature to load it); the hop
    replaces it with the full one (chain, parity) once the library is verified."""
    m = _manifest.Manifest(format=Format.TVM.value, signature=sig.to_dict(), target=tgt.name, extra=extra,
                           source={"path": str(src), "format": "onnx", "sha256": _manifest.sha256_of(src)})
    _manifest.write(dest, m)


__all__ = ["compile_onnx", "onnx_signature", "fix_batch", "choose_batch", "check_toolchain", "remote_device"]
