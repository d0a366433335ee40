"""Parity: run a reference and a candidate model on the same seeded inputs and compare every output.

Batch sizes 1 and 7 by default; any other dynamic dimension (a sequence length, an image side) at sizes 1,
13 and 64 (modelkit.converters._shapes), each statistic computed per case, and the report says which sizes were
verified per dimension (dynamic_dims). Per output the report holds max abs error, max rel error, cosine
similarity and argmax agreement (for outputs with a class axis). Exceeding the tolerance is an error, except
where the reference's own float32 error is larger: when an output exceeds the edge's atol (not one the user
passed) and the reference is a Keras model, it is evaluated again in float64 and each case allows 4x the
reference's own error on it (modelkit.converters._float64 has the measurements; the report records the floor
and the atol applied). A reference whose outputs barely change with the inputs would make any comparison
pass, so that is an error too (VacuousParityError), judged over cases of one output shape."""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Collection, Mapping

import numpy as np

from ..errors import DTypeError, InputNameError, ParityError, ResourceError, ShapeError
from ..spec import Signature
from . import _shapes
from .output_stats import compare_output
from .parity_report import OutputParity, ParityReport
from .registry import Tolerance

BATCH_SIZES = (1, 7)
OTHER_DIM_SIZES = _shapes.DYNAMIC_SIZES  # sizes of open non-batch dims (see _shapes)


def make_inputs(sig: Signature, batch: int, other: int | None, seed: int,
                data: Mapping[str, np.ndarray] | None = None, offset: int = 0,
                ranges: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
    """Inputs for one case: rows of real data when given (cycled), else seeded values within the
    input's inferred range (modelkit.converters.samples), else uniform [0, 1) floats / ints in [0, 10)."""
    from .samples import generate

    rng = np.random.default_rng(seed)
    out = {}
    for spec in sig.inputs:
        if data is not None and spec.name in data and len(data[spec.name]):
            src = data[spec.name]
            idx = (np.arange(batch) + offset) % len(src)
            out[spec.name] = np.ascontiguousarray(src[idx].astype(spec.dtype))
            continue
        shape = spec.concrete_shape(batch, other)
        out[spec.name] = generate(spec, shape, rng, (ranges or {}).get(spec.name))
    return out


def match_outputs(ref_names: list[str], cand_names: list[str]) -> list[tuple[str, str]]:
    """Pair outputs by name when both sides use the same names, else by position."""
    if sorted(ref_names) == sorted(cand_names):
        return [(n, n) for n in ref_names]
    if len(ref_names) != len(cand_names):
        raise ParityError(f"the models have different outputs: {ref_names} vs {cand_names}")
    return list(zip(ref_names, cand_names))


def _check_declared(candidate: Any, name: str, out: np.ndarray) -> None:
    """An artifact answers in the dtype its own signature declares (what a user codes against), or ParityError."""
    spec = next((o for o in candidate.signature.outputs if o.name == name), None)
    if spec is not None and spec.dtype != "string" and out.dtype.name != spec.dtype:
        raise ParityError(f"output '{name}': {candidate.path.name} answers {out.dtype.name}, where its signature "
                          f"says {spec.dtype}")


def compare_models(reference: Any, candidate: Any, tolerance: Tolerance, batch_sizes: tuple[int, ...] = BATCH_SIZES,
                   seed: int = 0, data: Mapping[str, np.ndarray] | None = None, inputs_label: str | None = None,
                   ranges: Mapping[str, Any] | None = None, unrunnable: Collection[Any] = ()) -> ParityReport:
    """Run both runtime Models on the same inputs and build the ParityReport (no raising on a mismatch).

    With open non-batch dims every case runs at other sizes (modelkit.converters._shapes); sizes the
    reference cannot run at, or that the candidate refuses with ShapeError, are listed in skipped_cases;
    the candidate failing otherwise where the reference runs is a ParityError. `unrunnable`: input shapes (as
    `shape_key` gives) that the chain's first source could not run at (unrunnable_shapes), skipped as the reference's.
    """
    sig = reference.signature
    fixed = fixed_batch(sig, candidate.signature)
    if fixed is not None:  # e.g. a TVM library tuned at batch 1: compare at its batch, as many cases
        batch_sizes = tuple(fixed for _ in batch_sizes)
    bounds = _shapes.axis_bounds(getattr(candidate, "dim_ranges", None))  # an ExecuTorch program's planned sizes
    plans: list[dict[int, int] | None] = list(_shapes.size_plans(sig, candidate.signature, bounds))
    dynamic = bool(_shapes.open_axes(sig))
    if dynamic and _shapes.data_covers_open_dims(sig, data):
        plans.insert(0, None)  # the real samples at their own length first, then seeded inputs at every size
    pairs = match_outputs(sig.output_names, candidate.signature.output_names)
    refs: dict[str, list[np.ndarray]] = {r: [] for r, _ in pairs}
    cands: dict[str, list[np.ndarray]] = {r: [] for r, _ in pairs}
    cases: list[dict[str, Any]] = []
    feeds: list[dict[str, np.ndarray]] = []  # one per case, for the float32 floor
    skipped: list[dict[str, Any]] = []
    offset = 0
    wanted = len(_shapes.DYNAMIC_SIZES) + (1 if plans[0] is None else 0)  # size plans that ran on both models
    ran: list[bool] = []  # per plan that ran on both: whether it counts once the open dims are found tied
    kept: list[bool] = []  # per case: likewise
    refused: list[set[int]] = []  # the sizes of each plan the reference refused where they differ
    agreed: set[int] = set()  # sizes at which the reference ran with every open axis at that size
    tied = False  # a plan refused at sizes that differ, each of which ran where all agree: the open dims are tied
    for j, sizes in enumerate(plans):
        if dynamic and sum(k or not tied for k in ran) >= wanted:
            break
        agree = sizes is None or _shapes.is_tied(sizes)  # the samples' own sizes, or every open axis at one
        case_sig, case_data = (sig, data) if sizes is None else (_shapes.case_signature(sig, sizes),
                                                                   None if plans[0] is None else data)
        usable = False
        for i, batch in enumerate(batch_sizes):
            feed = make_inputs(case_sig, batch, None, seed + 100 * i + j, case_data, offset, ranges)
            offset += batch
            shapes = {k: list(v.shape) for k, v in feed.items()}
            outs = _run_case(reference, candidate, feed, dynamic) if shape_key(shapes) not in unrunnable else \
                {"skipped": "reference", "reason": "the chain's source could not run at these sizes"}
            if isinstance(outs, dict):
                skipped.append({"batch": batch, "shapes": shapes, **outs})
                if outs["skipped"] == "reference":
                    if not agree:
                        refused.append(set(sizes.values()))
                    break  # these sizes do not fit the model: take the next plan
                continue
            usable = True
            r_out, c_out = outs
            case: dict[str, Any] = {"batch": batch, "shapes": shapes, "max_abs": {}}
            if sizes is not None and plans[0] is None:
                case["seeded"] = True  # other sizes than the samples': seeded inputs (split_max_abs)
            for r, c in pairs:
                a, b = np.asarray(r_out[r]), np.asarray(c_out[c])
                if a.shape != b.shape:
                    raise ParityError(f"output '{r}': shape {b.shape} from {candidate.path.name} differs from "
                                      f"{a.shape} from {reference.path.name} at input shapes {_shapes_text(shapes)}")
                _check_declared(candidate, c, b)
                refs[r].append(a)
                cands[r].append(b)
                case["max_abs"][r] = _max_abs(a, b)
            cases.append(case)
            feeds.append(feed)
            kept.append(agree)
        if usable:
            ran.append(agree)
            agreed |= set(sizes.values()) if agree and sizes else set()
            tied = any(r <= agreed for r in refused)
    if tied:  # sizes that differ and still ran did so by broadcasting (a graph's (N, 1) adjacency): not its inputs
        _drop_untied(kept, cases, feeds, refs, cands, skipped)
    if not cases:
        reasons = "; ".join(f"{_shapes_text(s['shapes'])}: {s['reason']}" for s in skipped[:3])
        raise ParityError(f"no verification case ran on both {reference.path.name} and {candidate.path.name}: "
                          f"{reasons}")
    dims = _shapes.summarize(sig, candidate.signature, cases, skipped)
    where = [_shapes_text(c["shapes"]) for c in cases] if dynamic else None
    outputs = [compare_output(r, refs[r], cands[r], tolerance, where=where) for r, _ in pairs]
    # above the edge's atol: is it the reference's own error? (an atol the user passed is kept as given)
    if tolerance.float32_floor and any(o.max_abs > tolerance.atol for o in outputs):
        outputs = _with_float32_floor(reference, feeds, refs, cands, cases, tolerance, outputs, where)
    label = inputs_label or ("real samples" if data else f"seeded uniform [0,1), seed {seed}")
    if plans[0] is None:
        label += "; open dimensions also at other sizes, seeded"
    report = ParityReport(ok=all(o.ok for o in outputs), reference=str(reference.path),
                          candidate=str(candidate.path), tolerance=tolerance.to_dict(), inputs=label, cases=cases,
                          outputs=outputs, dynamic_dims=dims, skipped_cases=skipped)
    few = _shapes.too_few_sizes(dims)
    if few:
        raise ParityError(f"{candidate.path.name}: {few}; see skipped_cases", report.to_dict())
    return report


def _drop_untied(kept: list[bool], cases: list[dict[str, Any]], feeds: list[dict[str, np.ndarray]],
                 refs: dict[str, list[np.ndarray]], cands: dict[str, list[np.ndarray]],
                 skipped: list[dict[str, Any]]) -> None:
    """Move the cases at sizes that differ to `skipped` (in place): the reference refused such sizes, each of which it
    ran at with every open axis at that one size, so its open dims are tied (nc185: a graph network's features (N, F)
    and adjacency (N, N) ran at an (N, 1) adjacency by broadcasting, where int8 and float garbage differ). An image
    model that refuses a side of 1 refuses (1, 1) too: no tie, and its sides are still checked apart."""
    for i in reversed(range(len(cases))):
        if kept[i]:
            continue
        case = cases.pop(i)
        feeds.pop(i)
        for lists in (refs, cands):
            for values in lists.values():
                values.pop(i)
        skipped.append({"batch": case["batch"], "shapes": case["shapes"], "skipped": "reference",
                        "reason": "the model's open dimensions are tied (it refuses some sizes that differ and runs "
                                  "where they agree): sizes that differ are not its inputs"})


def shape_key(shapes: Mapping[str, Any]) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """A case's input shapes ({input: shape}) without the batch: what a hop compares with unrunnable_shapes."""
    return tuple(sorted((k, tuple(int(d) for d in list(v)[1:])) for k, v in shapes.items()))


def unrunnable_shapes(manifest: Any) -> set[tuple[tuple[str, tuple[int, ...]], ...]]:
    """The input shapes (shape_key) a source's parity skipped because its reference could not run there (a Keras
    model whose feature map is empty at a side of 1: an ONNX made from it still "runs" there, and OpenVINO refused
    it, failing the onnx -> openvino hop at sizes that are not the model's; nc134). Carried down the chain."""
    skipped = ((getattr(manifest, "parity", None) or {}).get("skipped_cases")) or []
    return {shape_key(s["shapes"]) for s in skipped
            if s.get("skipped") == "reference" and isinstance(s.get("shapes"), dict)}


def _run_case(reference: Any, candidate: Any, feed: dict[str, np.ndarray],
              dynamic: bool) -> tuple[dict[str, Any], dict[str, Any]] | dict[str, str]:
    """Both models' outputs on one feed; with open dims, a size either side cannot take is a skip record
    ({"skipped": "reference" | "candidate", "reason": ...}); the candidate failing otherwise is a ParityError."""
    try:
        r_out = reference.predict(feed)
    except Exception as exc:  # noqa: BLE001 - any engine's error: these sizes are not the model's
        if not dynamic or isinstance(exc, ResourceError):
            raise
        return {"skipped": "reference", "reason": f"the reference cannot run at these sizes: {_first_line(exc)}"}
    void = next(((n, w) for n, out in r_out.items() for w in [_void(np.asarray(out))] if w), None)
    if dynamic and void:  # sizes too small for the model, where it still "runs": nothing to compare (nc76)
        return {"skipped": "reference", "reason": f"the reference's output '{void[0]}' is {void[1]} at these sizes: "
                                                  "nothing to compare"}
    try:
        c_out = candidate.predict(feed)
    except (InputNameError, DTypeError) as exc:  # on a feed its source runs on: the artifact's inputs are others
        raise ParityError(f"{candidate.path.name} does not take the inputs {reference.path.name} runs on: "
                          f"{_first_line(exc)}") from exc
    except ShapeError as exc:  # a typed refusal: the artifact accepts a narrower range (recorded)
        if not dynamic:
            raise
        return {"skipped": "candidate", "reason": f"the candidate refuses these sizes: {_first_line(exc)}"}
    except Exception as exc:  # noqa: BLE001
        if not dynamic:
            raise
        shapes = _shapes_text({k: list(v.shape) for k, v in feed.items()})
        raise ParityError(f"{candidate.path.name} fails at input shapes {shapes}, where {reference.path.name} "
                          f"runs: {_first_line(exc)}") from exc
    return r_out, c_out


def _void(out: np.ndarray) -> str:
    """'empty' or 'all NaN' for an output that says nothing at these sizes: ONNX's Cropping1D((1, 1)) at length 2
    (Keras raises there); Keras' own any-size MobileNetV2 under TensorFlow at 13x64, whose feature maps run empty
    and whose global pooling then averages nothing. '' for an output worth comparing."""
    if out.size == 0:
        return "empty"
    return "all NaN" if out.dtype.kind in "fc" and bool(np.all(np.isnan(out))) else ""


def _max_abs(a: np.ndarray, b: np.ndarray) -> float:
    if not a.size:
        return 0.0
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    return float("inf") if not np.all(np.isfinite(diff)) else float(np.max(diff))


def _shapes_text(shapes: Mapping[str, list[int]]) -> str:
    return ", ".join(f"'{k}' {tuple(v)}" for k, v in shapes.items())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def fixed_batch(reference_sig: Signature, candidate_sig: Signature) -> int | None:
    """The batch a candidate fixes where the reference keeps it dynamic (None if it fixes none)."""
    ref = {s.name: s for s in reference_sig.inputs}
    fixed = {s.shape[0] for s in candidate_sig.inputs
             if s.shape and s.shape[0] is not None and s.name in ref and ref[s.name].shape[:1] == (None,)}
    return fixed.pop() if len(fixed) == 1 else None


def _with_float32_floor(reference: Any, feeds: list[dict[str, np.ndarray]], refs: dict[str, list[np.ndarray]],
                        cands: dict[str, list[np.ndarray]], cases: list[dict[str, Any]], tol: Tolerance,
                        outputs: list[OutputParity], where: list[str] | None = None) -> list[OutputParity]:
    """Compare again with each case's atol lifted to float32's own error on it (modelkit.converters._float64:
    the reference's error against its float64 evaluation when it is a Keras model, and the outputs' ulp)."""
    from ._float64 import MAX_RELATIVE_FLOAT64, Float64Twin, case_atols, floors

    twin = Float64Twin.for_reference(reference)
    if twin is None:
        measured = {name: [float("nan")] * len(cases) for name in refs}
        truth: dict[str, list[float]] = {}
    else:
        measured, truth = floors(twin, feeds, refs, cands)
        for i, case in enumerate(cases):
            case["float32_floor"] = {name: values[i] for name, values in measured.items()}
    return [compare_output(o.name, refs[o.name], cands[o.name], tol, case_atols(tol.atol, measured[o.name],
                                                                                  refs[o.name]), measured[o.name],
                            where, float64=(truth[o.name], case_atols(tol.atol, measured[o.name], refs[o.name],
                                                                      MAX_RELATIVE_FLOAT64)) if truth else None)
            for o in outputs]


def verify_artifacts(a: str | os.PathLike, b: str | os.PathLike, tolerance: Tolerance | None = None,
                     atol: float | None = None, batch_sizes: tuple[int, ...] = BATCH_SIZES, seed: int = 0,
                     data: Mapping[str, np.ndarray] | None = None, raise_on_failure: bool = True,
                     data_label: str | None = None, **load_options: Any) -> ParityReport:
    """Load two artifacts with modelkit.load and compare them; `a` is the reference.

    The tolerance defaults to the registered edge's (a's format -> b's format), else atol 1e-4; when either
    artifact is quantized (its manifest says so), the loose bounds its conversion checked under the accuracy
    gate (modelkit.converters.quantize.tolerance_for: int8/bf16 atol 1.0, cosine 0.98), so `--atol` can judge it
    too. Inputs: `data` (checked against a's inputs), else modelkit.converters.samples.plan_inputs picks them.
    """
    from ..formats import detect
    from ..runtime import load
    from .registry import edges

    if tolerance is None:
        from .quantize import tolerance_for

        edge = edges().get((detect(a), detect(b)))
        tolerance = edge.tolerance if edge else Tolerance(atol=1e-4, min_cosine=0.9999)
        quantized = quantized_manifest(b) or quantized_manifest(a)
        if quantized is not None:
            tolerance = tolerance_for(quantized.quantization, tolerance)
    if atol is not None:
        tolerance = dataclasses.replace(tolerance, atol=atol, float32_floor=False)
    from .. import manifest as _manifest
    from .samples import plan_inputs

    backend = reference_backend(a, b)
    ref = load(a, **load_options, **({"backend": backend} if backend else {}))
    cand = load(b, **load_options)
    plan = plan_inputs(ref.signature, ref, _manifest.read(a), data, data_label, seed)
    report = compare_models(ref, cand, tolerance, batch_sizes, seed, plan.data, plan.label, plan.ranges)
    if raise_on_failure:
        report.raise_if_failed()
    return report


def reference_backend(a: str | os.PathLike, b: str | os.PathLike) -> str | None:
    """The Keras backend to load a .keras reference `a` under, when Keras is not loaded yet: the one the conversion
    that made `b` computed its reference under (its first hop's edge, from b's manifest), so verify compares what
    that hop compared. nc183: a layer resizing to a feature map's dynamic size rebuilds under torch and JAX but
    not under TensorFlow, and `modelkit verify seg.keras seg.pte` failed to load the reference; None otherwise."""
    from .. import manifest as _manifest
    from .._backend import loaded_backend
    from ..errors import ManifestError
    from ..formats import Format, detect
    from .registry import spec_of

    if detect(a) != Format.KERAS or loaded_backend() is not None:
        return None
    try:
        m = _manifest.read(b)
    except ManifestError:
        return None
    first = m.chain[0] if m is not None and m.chain else {}
    spec = spec_of(str(first.get("converter", ""))) if first.get("source") == Format.KERAS.value else None
    return spec.backend if spec is not None else None


def quantized_manifest(path: str | os.PathLike) -> Any:
    """The manifest of an artifact that records a lossy mode (`.quantization`: int8, bf16, ...), else None (not
    quantized, no manifest, or an unreadable one)."""
    from .. import manifest as _manifest
    from ..errors import ManifestError

    try:
        m = _manifest.read(path)
    except ManifestError:
        return None
    return m if m is not None and (m.quantization or "none") not in ("none", "fp32") else None
