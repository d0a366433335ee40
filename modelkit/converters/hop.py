"""One conversion hop, run inside the child process that has the edge's backend:
convert into a temporary path, verify against the source, write the manifest, then rename.

A hop that fails parity keeps its artifact under a name that says so (`x.parity-failed.onnx`) with
its manifest and report, and raises ParityError; a hop that fails otherwise leaves nothing behind.
A lossy hop (quantized) is judged on the task instead of atol: source and artifact accuracy on labelled
data go into the manifest (extra["accuracy"]), and a drop above max_accuracy_drop raises AccuracyError. So is an
exact hop from a quantized source (int8 onnx -> tvm) when there is labelled data, within what the source's own drop
left of max_accuracy_drop: the drops of a chain add up to at most max_accuracy_drop against the float model.
`route` picks one of the pair's routes (modelkit.converters.registry.ROUTES; run_hops tries them in order
through modelkit.converters.routes); the manifest records it and the routes tried before it (extra["route"]).
The verification inputs (the user's `data`, the training data set, ranges inferred from the model, or
uniform: modelkit.converters.samples) are chosen before converting, so bad samples fail before any work,
and recorded in the manifest (extra["verification_inputs"]). `input_spec` gives models that define no
inputs (subclassed) their inputs, in this process (modelkit.keras_io.inputs).
"""
from __future__ import annotations

import os
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from .. import _atomic
from .. import manifest as _manifest
from .._text import progress
from ..errors import ModelkitError
from ..formats import FOLDER_SUFFIXES, Format
from ..keras_io.inputs import parse_input_specs, using_input_spec
from . import gate as _gate
from . import gate_verdict as _said
from . import quantize as _q
from . import size_limits
from .registry import get_edge
from .samples import InputPlan, dataset_samples, plan_inputs
from .support import check_support
from .verify import compare_models, quantized_manifest, unrunnable_shapes

EVAL_PARITY_ROWS = 64  # the lossy hops' parity on --eval-data: enough rows, bounded time on big eval sets


def run_hops(hops: list[dict[str, Any]], keep_going: bool = False) -> list[dict[str, Any]]:
    """Run hops in order (a later hop may read an earlier one's artifact), each trying its routes
    (modelkit.converters.routes.run_routes); return their summaries. A hop whose routes in this process all
    failed, with more routes to go, gives {"failed": [...]}, and convert() goes on with its next route.
    With keep_going (a conversion to several formats), a hop that fails gives {"error": ...} and the
    others still run; else its error ends the call, unless it is a SourceRouteError (convert retries the hop
    from a file its source's other route makes). (A hop never shares a child with the hop whose artifact
    it reads: convert() sends it once that one has finished.)"""
    from .._child_errors import error_payload
    from ..errors import SourceRouteError
    from .routes import run_routes

    out: list[dict[str, Any]] = []
    for h in hops:
        try:
            out.append(run_routes(**h))
        except Exception as exc:
            if not keep_going and not isinstance(exc, SourceRouteError):  # that one, convert may retry
                raise
            if keep_going:
                print(f"[{h['index']}/{h['total']}] {h['source']} -> {h['target']}: FAILED ({type(exc).__name__}); "
                      "going on with the other formats", file=sys.stderr, flush=True)
            out.append({"error": error_payload(exc)})
    return out


def failed_name(dest: Path, route: str | None = None) -> Path:
    """`cnn.onnx` -> `cnn.parity-failed.onnx`; `cnn_saved_model` -> `cnn_saved_model.parity-failed`; a
    route other than its pair's first keeps its own: `cnn.unrolled.parity-failed.tflite`."""
    tag = f".{route}" if route else ""
    if dest.suffix and not dest.name.endswith(FOLDER_SUFFIXES):
        return dest.with_name(f"{dest.stem}{tag}.parity-failed{dest.suffix}")
    return dest.with_name(f"{dest.name}{tag}.parity-failed")


def run_hop(src: str, dest: str, source: str, target: str, options: dict[str, Any] | None = None,
            verify: bool = True, force: bool = False, trust_unsafe_code: bool = False,
            atol: float | None = None, index: int = 1, total: int = 1, eval_data: str | None = None,
            max_accuracy_drop: float = _q.DEFAULT_MAX_ACCURACY_DROP, data: str | None = None,
            input_spec: list[Any] | None = None, route: str | None = None,
            tried: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """One route (`route`; default the pair's first) of one hop; `tried`: the routes that failed before it."""
    edge = get_edge(Format(source), Format(target), route)
    with using_input_spec(input_spec):
        return _run_hop(src, dest, edge, options, verify, force, trust_unsafe_code, atol, index, total,
                        eval_data, max_accuracy_drop, data, input_spec, tried or [])


def _run_hop(src: str, dest: str, edge: Any, options: dict[str, Any] | None, verify: bool,
             force: bool, trust_unsafe_code: bool, atol: float | None, index: int, total: int,
             eval_data: str | None, max_accuracy_drop: float, data: str | None,
             input_spec: list[Any] | None, tried: list[dict[str, Any]]) -> dict[str, Any]:
    from .routes import for_manifest

    src_p, dest_p = Path(src), Path(dest)
    _atomic.check_writable(dest_p, force)
    opts = {**edge.options, **{k: v for k, v in (options or {}).items() if k in edge.options}}
    mode = _q.check_mode(opts["quantize"], edge.target) if "quantize" in opts else "none"
    lossy = _q.is_lossy(mode)
    tolerance = _q.tolerance_for(mode, edge.tolerance)
    src_manifest = _manifest.read(src_p)
    gate_mode = mode if lossy else None  # the hops judged on the task: lossy ones, and those below
    if not lossy and (quantized := quantized_manifest(src_p)) is not None:
        # an exact hop from a quantized source (int8 onnx -> tvm): two engines run the same quantized graph, and
        # one that requantizes in integers rounds some values to the neighbouring step (1/255 on a softmax
        # output), so the bounds `modelkit verify` applies to a quantized artifact (was the edge's atol 1e-4);
        # those bounds say little (atol 1 on a probability), so with labelled data the hop is judged on the task
        # too, within what the source's own drop left of max_accuracy_drop
        tolerance = _q.tolerance_for(quantized.quantization, edge.tolerance)
        if verify and _q.has_eval_data(src_manifest, eval_data):
            gate_mode = quantized.quantization
    tolerance = tolerance if atol is None else replace(tolerance, atol=float(atol), float32_floor=False)
    max_drop = _q.check_max_drop(max_accuracy_drop)
    if lossy:  # fail before converting when there is nothing to calibrate with or judge the artifact on
        _q.check_data_available(_manifest.read(src_p), mode, opts.get("calibration_data"), eval_data, verify)
    call_opts = dict(opts)
    if edge.source == Format.KERAS:
        check_support(src_p, edge.target, route=edge.route)  # typed refusal naming the layer, before any work
        call_opts["trust_unsafe_code"] = trust_unsafe_code
    reference, plan, evals = None, None, None
    coupled = list(((src_manifest.extra or {}) if src_manifest else {}).get("rows_coupled") or [])
    first = get_edge(edge.source, edge.target).route == edge.route
    tag = f"[{index}/{total}] {edge.source.value} -> {edge.target.value}" + ("" if first else f" (route {edge.route})")
    _atomic.remove_stale_partials(dest_p)
    tmpdir = _atomic.make_partial_dir(dest_p)
    try:
        _test_pause()
        if verify:  # the source and its verification inputs first: samples that do not fit fail before converting
            reference = _reference(src_p, edge, trust_unsafe_code)
            plan = _plan(reference, src_manifest, data)
            if edge.source == Format.KERAS:  # random draws at inference: nothing to check an artifact against
                from .determinism import check_deterministic

                coupled = check_deterministic(reference, plan, src_p.name)
                if coupled:
                    progress(f"{tag}: output(s) {', '.join(map(repr, coupled))} of a row depend on the other rows "
                             "of its batch (a layer reduces over the batch at inference); the artifact computes "
                             "the same, and `modelkit serve` runs it one request per call")
            if gate_mode:  # refused before converting, by any route: a model no labels can judge, then labels
                _gate.check_judgeable(reference.signature)  # that do not fit it (read once: the gate uses them too)
                evals = _q.eval_set(src_manifest, reference.signature, eval_data)
                _gate.check_judgeable(reference.signature, evals[1])
            if gate_mode and eval_data and plan.source in ("inferred", "uniform"):
                plan = _eval_plan(reference, src_manifest, evals)
        progress(f"{tag}: converting {src_p.name} ...")
        tmp = tmpdir / dest_p.name
        t0 = time.perf_counter()
        info = edge.func(src_p, tmp, **call_opts)
        seconds = time.perf_counter() - t0
        if edge.target == Format.TFLITE:  # the converter wrote it here: known good, no sandboxed first open
            from ..safety.tflite import record_known_good

            record_known_good(tmp)
        from ..runtime import load

        if reference is not None and _renamed_for_tf(edge.target, reference.signature):
            # inputs TF renamed ('user-id' -> 'user_id'): the engine maps them back by the manifest, so the candidate
            # is checked with one, as users load it (the final one replaces it)
            _manifest.write(tmp, _build_manifest(src_p, edge, info, opts, seconds, src_manifest, None,
                                                 reference.signature))
        candidate = load(tmp)
        report, accuracy = None, None
        if verify:
            report = compare_models(reference, candidate, tolerance, data=plan.data, inputs_label=plan.label,
                                    ranges=plan.ranges, unrunnable=unrunnable_shapes(src_manifest))
            report.candidate = str(dest_p)  # the name it is written at, not the partial folder it was checked in
            if gate_mode:
                inputs, labels, label = evals  # read before converting (verify and gate_mode)
                budget = max_drop if lossy else _gate.left_by(src_manifest, max_drop, label)
                accuracy = _gate.accuracy_gate(reference, candidate, inputs, labels, budget, label, gate_mode)
                if budget != max_drop:
                    accuracy["max_accuracy_drop_of_chain"] = max_drop
        source_sig = reference.signature if reference is not None else (src_manifest.sig if src_manifest else None)
        signature = _in_source_order(candidate.signature, source_sig)
        m = _build_manifest(src_p, edge, info, opts, seconds, src_manifest, report, signature)
        if plan is not None:
            m.extra["verification_inputs"] = plan.to_dict()
        m.extra["route"] = {"taken": edge.route, "tried": for_manifest(tried), **(info.get("route") or {})}
        if edge.source == Format.KERAS and (policy := _saved_policy(src_p)) is not None:
            m.extra["source_dtype_policy"] = {"policy": policy, "computed_in": "float32"}  # keras_io.policy
        if coupled:
            m.extra["rows_coupled"] = coupled  # serving/batcher.py: never merged with other requests
        if input_spec:
            m.extra["input_spec"] = [s.to_dict() for s in parse_input_specs(input_spec)]
        if accuracy is not None:
            m.extra["accuracy"] = accuracy
            progress(f"{tag}: {_said.summary(accuracy)}")
        if (report is not None and not report.ok) or (accuracy is not None and not accuracy["ok"]):
            bad = failed_name(dest_p, None if first else edge.route)
            report.candidate = str(bad)
            m.parity = report.to_dict()
            _atomic.replace(tmp, bad, force=True)
            _manifest.write(bad, m)
            print(f"{tag}: {_verdict(report, accuracy, gate_mode or mode)}; kept as {bad.name}", file=sys.stderr,
                  flush=True)
            if accuracy is not None:  # for a lossy hop the task metric is the verdict that matters
                _said.raise_if_failed(accuracy, str(bad))
                from ..errors import ParityError

                raise ParityError(f"{bad} ({gate_mode}): {_said.summary(accuracy)}, but its outputs fail the "
                                  f"{gate_mode} sanity bounds kept under the accuracy gate: {report.failures()}"
                                  f"{_said.open_size_hint(report, reference.signature)}",
                                  report.to_dict())
            report.raise_if_failed()
        limits, found = size_limits.for_hop(edge.source, edge.target, src_p, tmp, reference, candidate, report,
                                            plan.ranges if plan else None, src_manifest, signature)
        if limits:
            m.extra["size_limits"] = limits
            if found:
                progress(f"{tag}: {size_limits.said(limits)}")
        # Manifest first: a kill between the two renames leaves a manifest without an artifact, which
        # the next run overwrites, never an artifact without its manifest (which --force would guard).
        _atomic.check_writable(dest_p, force)
        _manifest.write(dest_p, m, content=tmp)
        _atomic.replace(tmp, dest_p, force)
    except ModelkitError as exc:
        if str(tmpdir) not in str(exc):
            raise
        # the candidate failed while checked in its partial folder (an engine that names its file: ExecuTorch's
        # "failed running this program"), which is removed below: name the artifact asked for, and that it is not
        # there, not a path that no longer exists
        from ..errors import retyped

        where = str(tmpdir / dest_p.name)
        msg = str(exc).replace(where, f"{dest_p} (not written)").replace(str(tmpdir), str(dest_p.parent))
        raise retyped(type(exc), msg, getattr(exc, "report", None)) from exc
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    progress(f"{tag}: wrote {dest_p} in {seconds:.1f} s; {_verdict(report, accuracy, gate_mode or mode)}")
    from .backend_agreement import probe

    return {"format": edge.target.value, "path": str(dest_p), "seconds": seconds,
            "size_bytes": m.size_bytes, "parity": report.to_dict() if report else None,
            "quantization": m.quantization, "accuracy": accuracy, "route": m.extra["route"],
            "probe": probe(reference, plan) if edge.source == Format.KERAS and plan is not None else None}


def _renamed_for_tf(target: Format, sig: Any) -> bool:
    from ..spec import tf_input_names

    return target in (Format.SAVED_MODEL, Format.TFLITE) and any(
        a != b for a, b in tf_input_names(sig.input_names).items())


def _saved_policy(src: Path) -> str | None:
    from ..keras_io.files import check_keras_archive
    from ..keras_io.policy import saved_mixed_policy

    return saved_mixed_policy(check_keras_archive(src))


def _verdict(report: Any, accuracy: dict[str, Any] | None, mode: str) -> str:
    """The hop's one-line verdict: parity for exact hops; for a lossy hop the accuracy gate it was judged by,
    with the output difference as information only (its atol is not a judgement)."""
    if accuracy is None:
        return report.summary() if report else "not verified"
    if report is not None and not report.ok:  # the loose bounds kept under the gate (quantize.INT8_TOLERANCE)
        return f"{_said.summary(accuracy)}, but the outputs fail the {mode} sanity bounds: {report.failures()}"
    from .parity_report import split_max_abs

    worst, seeded = split_max_abs(report.to_dict() if report else None)
    also = f" on the samples ({seeded:.1e} on seeded inputs at other sizes)" if seeded and seeded > worst else ""
    diff = f"; outputs differ by up to {worst:.1e}{also} ({mode}, not judged on)" if worst is not None else ""
    return f"judged by {_said.summary(accuracy)}{diff}"


def _in_source_order(sig: Any, want: Any) -> Any:
    """The artifact's signature with inputs and outputs in the source's order (TFLite sorts them by name)."""
    if want is None:
        return sig
    from ..runtime.base import order_outputs
    from ..spec import Signature

    ins = {s.name: s for s in sig.inputs}
    outs = {s.name: s for s in sig.outputs}
    return Signature(tuple(ins[n] for n in order_outputs(list(ins), want.input_names)),
                     tuple(outs[n] for n in order_outputs(list(outs), want.output_names)))


def _reference(src: Path, edge: Any, trust: bool) -> Any:
    """The source as a runtime Model. For a TF-based edge from .keras, the model the edge converts is
    loaded here once per process (same file bytes, same trust flag, same input spec) and its outputs are
    remembered per input, so the hops of one conversion load and run the source once."""
    from ..runtime import load

    if edge.source != Format.KERAS:
        return load(src)
    if edge.backend == "tensorflow":
        from ..runtime.keras import KerasModel
        from ._tf_function import MemoReference, shared_model

        return MemoReference(KerasModel(src, shared_model(src, trust)))
    return load(src, trust_unsafe_code=trust)


def _plan(reference: Any, src_manifest: Any, data: str | None) -> InputPlan:
    """The verification inputs: the user's samples (read without trusting the file), else plan_inputs' order."""
    samples = None
    if data:
        from ..input_files import read_inputs

        got = read_inputs(data)
        samples = got if isinstance(got, dict) else {"x": got}
    return plan_inputs(reference.signature, reference, src_manifest, samples, Path(data).name if data else None)


def _eval_plan(reference: Any, src_manifest: Any, evals: tuple[dict[str, np.ndarray], Any, str]) -> InputPlan:
    """A lossy hop with the user's --eval-data and no real samples of its own: parity runs on (the first
    EVAL_PARITY_ROWS of) those samples, the inputs the artifact is meant for. Synthetic inputs lie outside the
    calibrated ranges, where int8 is wrong by design (a MobileNetV2 trained on digits: cosine 0.94 on uniform
    noise, 0.9995 on its test images, the same accuracy)."""
    inputs, _labels, label = evals
    rows = {k: v[:EVAL_PARITY_ROWS] for k, v in inputs.items()}
    return plan_inputs(reference.signature, reference, src_manifest, rows, f"{label}, first {EVAL_PARITY_ROWS} rows")


def reference_data(src_manifest: Any, sig: Any) -> tuple[dict[str, np.ndarray] | None, str | None]:
    """Real samples for verification: the test split of the data set the model was trained on."""
    return dataset_samples(src_manifest, sig)


def _build_manifest(src: Path, edge: Any, info: dict[str, Any], opts: dict[str, Any], seconds: float,
                    src_manifest: Any, report: Any, signature: Any) -> _manifest.Manifest:
    chain = list(src_manifest.chain) if src_manifest else []
    chain.append(_manifest.Edge(edge.source.value, edge.target.value, edge.func_path,
                                info.get("versions", {}), opts, round(seconds, 3)).__dict__)
    return _manifest.Manifest(
        format=edge.target.value,
        signature=signature.to_dict(),
        source={"path": str(src), "format": edge.source.value, "sha256": _manifest.sha256_of(src)},
        chain=chain, opset=info.get("opset"), ir_version=info.get("ir_version"),
        quantization=_quantization(info, src_manifest), parity=report.to_dict() if report else None,
        training=src_manifest.training if src_manifest else None,
        target=info.get("target"), extra=_extra(info, report, signature),
    )


def _quantization(info: dict[str, Any], src_manifest: Any) -> str | None:
    """The artifact's quantization: the edge's own mode, else its source's lossy one (the int8 onnx -> tvm hop
    compiles a quantized graph: an int8 artifact, which `modelkit verify` and inspect must know)."""
    own = info.get("quantization")
    if _q.is_lossy(own) or src_manifest is None or not _q.is_lossy(src_manifest.quantization):
        return own
    return src_manifest.quantization


def _extra(info: dict[str, Any], report: Any, signature: Any) -> dict[str, Any]:
    """The edge's extra (targets, tuning) plus `dynamic_dims`: per input and open axis, whether the
    artifact keeps it dynamic (else `fixed`), the sizes parity verified, and the range the artifact
    accepts where its edge knows one (`accepts`, from torch.export). Unverified hops list the open dims."""
    extra = dict(info.get("extra") or {})  # edges that compile for a target
    if report is not None:
        dims = {name: {axis: dict(entry) for axis, entry in axes.items()}
                for name, axes in (report.dynamic_dims or {}).items()}
    else:
        dims = {s.name: {str(i): {"dynamic": True, "verified": None} for i, d in enumerate(s.shape) if d is None}
                for s in signature.inputs}
        dims = {name: axes for name, axes in dims.items() if axes}
    for key, accepts in (info.get("dim_ranges") or {}).items():
        name, _, axis = key.rpartition(":")
        if axis in dims.get(name, {}):
            dims[name][axis]["accepts"] = accepts
    if dims:
        extra["dynamic_dims"] = dims
    return extra


PAUSE_ENV = "MODELKIT_TEST_HOP_PAUSE"


def _test_pause() -> None:
    """Test hook: MODELKIT_TEST_HOP_PAUSE=SECONDS holds a hop that long once its partial output exists, so an
    interrupt test can land mid-hop however fast the machine converts (interruptible like any work)."""
    seconds = os.environ.get(PAUSE_ENV)
    if seconds:
        time.sleep(float(seconds))
