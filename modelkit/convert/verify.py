"""Parity: run a reference and a candidate model on the same seeded inputs and compare every output.

Batch sizes 1 and 7 by default, and two sizes for any other dynamic dimension. Per output the
report holds max abs error, max rel error, cosine similarity and argmax agreement (for outputs with a
class axis). Exceeding the tolerance is an error. A reference whose outputs barely change with the
inputs would make any comparison pass, so that is an error too (VacuousParityError).
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import numpy as np

from ..errors import ParityError, VacuousParityError
from ..spec import Signature
from .registry import Tolerance

BATCH_SIZES = (1, 7)
OTHER_DIM_SIZES = (16, 24)


@dataclass
class OutputParity:
    name: str
    max_abs: float
    max_rel: float
    cosine: float
    argmax_agreement: float | None
    spread: float  # largest std of the reference output across samples (vacuity guard)
    ok: bool
    reason: str = ""


@dataclass
class ParityReport:
    ok: bool
    reference: str
    candidate: str
    tolerance: dict[str, float]
    inputs: str
    cases: list[dict[str, Any]]
    outputs: list[OutputParity] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        worst = max(self.outputs, key=lambda o: o.max_abs) if self.outputs else None
        head = "parity OK" if self.ok else "parity FAILED"
        if worst is None:
            return head
        agree = "" if worst.argmax_agreement is None else f", argmax agreement {worst.argmax_agreement:.3f}"
        return f"{head}: max abs error {worst.max_abs:.2e} on '{worst.name}' (atol {self.tolerance['atol']:.0e}){agree}"

    def failures(self) -> str:
        return "; ".join(f"output '{o.name}': {o.reason}" for o in self.outputs if not o.ok)

    def raise_if_failed(self) -> None:
        if self.ok:
            return
        bad = [o for o in self.outputs if not o.ok]
        cls = VacuousParityError if bad and all(o.reason.startswith("vacuous") for o in bad) else ParityError
        raise cls(f"{self.candidate} does not match {self.reference}: {self.failures()}", self.to_dict())


def make_inputs(sig: Signature, batch: int, other: int | None, seed: int,
                data: Mapping[str, np.ndarray] | None = None, offset: int = 0) -> dict[str, np.ndarray]:
    """Inputs for one case: rows of real data when given, else seeded uniform [0, 1) / small ints."""
    rng = np.random.default_rng(seed)
    out = {}
    for spec in sig.inputs:
        if data is not None and spec.name in data and len(data[spec.name]) >= batch:
            src = data[spec.name]
            idx = (np.arange(batch) + offset) % len(src)
            out[spec.name] = np.ascontiguousarray(src[idx].astype(spec.dtype))
            continue
        shape = spec.concrete_shape(batch, other)
        kind = np.dtype(spec.dtype).kind
        if kind == "f":
            out[spec.name] = rng.random(shape, dtype=np.float64).astype(spec.dtype)
        elif kind in "iu":
            out[spec.name] = rng.integers(0, 10, size=shape).astype(spec.dtype)
        elif kind == "b":
            out[spec.name] = rng.random(shape) > 0.5
        else:
            raise ParityError(f"cannot make test inputs of dtype {spec.dtype} for '{spec.name}'")
    return out


def match_outputs(ref_names: list[str], cand_names: list[str]) -> list[tuple[str, str]]:
    """Pair outputs by name when both sides use the same names, else by position."""
    if sorted(ref_names) == sorted(cand_names):
        return [(n, n) for n in ref_names]
    if len(ref_names) != len(cand_names):
        raise ParityError(f"the models have different outputs: {ref_names} vs {cand_names}")
    return list(zip(ref_names, cand_names))


def compare_models(reference: Any, candidate: Any, tolerance: Tolerance, batch_sizes: tuple[int, ...] = BATCH_SIZES,
                   seed: int = 0, data: Mapping[str, np.ndarray] | None = None, inputs_label: str | None = None
                   ) -> ParityReport:
    """Run both runtime Models on the same inputs and build the ParityReport (no raising)."""
    sig = reference.signature
    fixed = fixed_batch(sig, candidate.signature)
    if fixed is not None:  # e.g. a TVM library tuned at batch 1: compare at its batch, as many cases
        batch_sizes = tuple(fixed for _ in batch_sizes)
    dynamic_other = any(d is None for s in sig.inputs for d in s.shape[1:])
    others = OTHER_DIM_SIZES if dynamic_other else (None,)
    pairs = match_outputs(sig.output_names, candidate.signature.output_names)
    refs: dict[str, list[np.ndarray]] = {r: [] for r, _ in pairs}
    cands: dict[str, list[np.ndarray]] = {r: [] for r, _ in pairs}
    cases = []
    offset = 0
    for i, batch in enumerate(batch_sizes):
        for j, other in enumerate(others):
            feed = make_inputs(sig, batch, other, seed + 100 * i + j, data, offset)
            offset += batch
            r_out, c_out = reference.predict(feed), candidate.predict(feed)
            for r, c in pairs:
                a, b = np.asarray(r_out[r]), np.asarray(c_out[c])
                if a.shape != b.shape:
                    raise ParityError(f"output '{r}': shape {b.shape} from {candidate.path.name} differs from "
                                      f"{a.shape} from {reference.path.name} at batch {batch}")
                refs[r].append(a)
                cands[r].append(b)
            cases.append({"batch": batch, "shapes": {k: list(v.shape) for k, v in feed.items()}})
    outputs = [_compare_output(r, refs[r], cands[r], tolerance) for r, _ in pairs]
    label = inputs_label or ("real samples" if data else f"seeded uniform [0,1), seed {seed}")
    return ParityReport(ok=all(o.ok for o in outputs), reference=str(reference.path), candidate=str(candidate.path),
                        tolerance=tolerance.to_dict(), inputs=label, cases=cases, outputs=outputs)


def fixed_batch(reference_sig: Signature, candidate_sig: Signature) -> int | None:
    """The batch a candidate fixes where the reference keeps it dynamic (None if it fixes none)."""
    ref = {s.name: s for s in reference_sig.inputs}
    fixed = {s.shape[0] for s in candidate_sig.inputs
             if s.shape and s.shape[0] is not None and s.name in ref and ref[s.name].shape[:1] == (None,)}
    return fixed.pop() if len(fixed) == 1 else None


def _compare_output(name: str, refs: list[np.ndarray], cands: list[np.ndarray], tol: Tolerance) -> OutputParity:
    max_abs = max_rel = 0.0
    cosine = 1.0
    agree_n = agree_total = 0
    for a, b in zip(refs, cands):
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        diff = np.abs(a64 - b64)
        if not np.all(np.isfinite(b64)) and np.all(np.isfinite(a64)):
            max_abs = float("inf")
        else:
            max_abs = max(max_abs, float(np.nanmax(diff)) if diff.size else 0.0)
        max_rel = max(max_rel, float(np.nanmax(diff / (np.abs(a64) + 1e-7))) if diff.size else 0.0)
        na, nb = np.linalg.norm(a64), np.linalg.norm(b64)
        cos = 1.0 if na == 0 and nb == 0 else float(np.dot(a64.ravel(), b64.ravel()) / max(na * nb, 1e-300))
        cosine = min(cosine, cos)
        if a.ndim >= 2 and a.shape[-1] > 1:
            agree_n += int(np.sum(np.argmax(a64, -1) == np.argmax(b64, -1)))
            agree_total += int(np.prod(a.shape[:-1]))
    agreement = agree_n / agree_total if agree_total else None
    stacked = np.concatenate([r.reshape(r.shape[0], -1).astype(np.float64) for r in refs], axis=0)
    spread = float(np.max(np.std(stacked, axis=0))) if stacked.shape[0] > 1 else float("nan")
    scale = float(np.max(np.abs(stacked))) if stacked.size else 0.0
    reasons = []
    if stacked.shape[0] > 1 and spread <= 1e-6 * max(scale, 1e-6):
        reasons.append(f"vacuous check: the reference output is constant across {stacked.shape[0]} different "
                       f"inputs (largest std {spread:.1e}); a dead or untrained model proves nothing")
    if not max_abs <= tol.atol:
        reasons.append(f"max abs error {max_abs:.3e} > atol {tol.atol:.0e}")
    if cosine < tol.min_cosine:
        reasons.append(f"cosine similarity {cosine:.6f} < {tol.min_cosine}")
    if agreement is not None and agreement < tol.min_argmax_agreement:
        reasons.append(f"argmax agreement {agreement:.3f} < {tol.min_argmax_agreement}")
    return OutputParity(name, max_abs, max_rel, cosine, agreement, spread, not reasons, "; ".join(reasons))


def verify_artifacts(a: str | os.PathLike, b: str | os.PathLike, tolerance: Tolerance | None = None,
                     atol: float | None = None, batch_sizes: tuple[int, ...] = BATCH_SIZES, seed: int = 0,
                     data: Mapping[str, np.ndarray] | None = None, raise_on_failure: bool = True,
                     **load_options: Any) -> ParityReport:
    """Load two artifacts with modelkit.load and compare them; `a` is the reference.

    The tolerance defaults to the registered edge's (a's format -> b's format), else atol 1e-4.
    """
    from ..formats import detect
    from ..runtime import load
    from .registry import edges

    if tolerance is None:
        edge = edges().get((detect(a), detect(b)))
        tolerance = edge.tolerance if edge else Tolerance(atol=1e-4, min_cosine=0.9999)
    if atol is not None:
        tolerance = Tolerance(atol=atol, min_cosine=tolerance.min_cosine,
                              min_argmax_agreement=tolerance.min_argmax_agreement)
    ref, cand = load(a, **load_options), load(b, **load_options)
    report = compare_models(ref, cand, tolerance, batch_sizes, seed, data)
    if raise_on_failure:
        report.raise_if_failed()
    return report
