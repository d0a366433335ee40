"""Per-output parity statistics over the cases of one check (modelkit.converters.verify): the worst max abs / max
rel error and cosine, argmax agreement, non-finite mismatches and the vacuity guard (a reference whose outputs barely
change with the inputs)."""
from __future__ import annotations

from typing import Any

import numpy as np

from .parity_report import OutputParity
from .registry import Tolerance

COSINE_NOISE = 1e-2  # a case whose outputs are all this close (and within the atol) passes the cosine check
VACUOUS_SPREAD = 1e-6  # reference outputs whose std across inputs is at most this fraction of their scale: fails
# at most this fraction: passes with a warning (a random-weight VGG16 without its caffe preprocessing, on [0, 1)
# inputs: std 2e-6 against softmax values of 0.1; measured models that respond to their inputs: 1e-2 and more)
WEAK_SPREAD = 1e-4


def compare_output(name: str, refs: list[np.ndarray], cands: list[np.ndarray], tol: Tolerance,
                    atols: list[float] | None = None, floor: list[float] | None = None,
                    where: list[str] | None = None,
                    float64: tuple[list[float], list[float]] | None = None) -> OutputParity:
    """Statistics over the cases, each computed per case (cases may differ in shape): the worst max abs /
    max rel error and cosine, argmax agreement over all rows, and the vacuity guard over cases of one shape.
    `atols` (per case) replaces the edge's atol where the reference's float32 floor (per case) was measured.
    `float64` (per case: the candidate's max abs error against the float64 evaluation, and the bound there)
    passes a case beyond its atol that is within that bound of the exact answer (modelkit.converters._float64).
    `where` (per case, for cases of several shapes) names the input shapes of the worst cosine and max abs."""
    max_abs = max_rel = 0.0
    worst_abs = worst_cos = 0  # the cases they came from
    over: list[tuple[float, float, float]] = []  # (max abs, atol, floor) of the cases above their atol
    odd_cases: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []  # NaN / inf against a number
    cosine = 1.0
    agree_n = agree_total = 0
    from_exact: float | None = None  # the largest error against the float64 answer of the cases judged by it
    for i, (a, b) in enumerate(zip(refs, cands)):
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        diff = np.abs(a64 - b64)
        odd = _nonfinite_mismatch(a64, b64)
        if odd.any():  # NaN against a number: an infinite error, not "0 > atol"; named in its own reason
            case_abs = float("inf")
            odd_cases.append((i, odd, a64, b64))
        else:
            case_abs = float(np.nanmax(diff)) if diff.size else 0.0
        if case_abs > max_abs:
            max_abs, worst_abs = case_abs, i
        case_atol = atols[i] if atols is not None else tol.atol
        rest = diff[~odd & np.isfinite(diff)] if odd.any() else None  # the error on the values both sides give
        finite_abs = case_abs if rest is None else float(rest.max()) if rest.size else 0.0
        exact = float64 is not None and not odd.any() and float64[0][i] <= float64[1][i]
        if not finite_abs <= case_atol and exact:
            from_exact = max(from_exact or 0.0, float64[0][i])
        elif not finite_abs <= case_atol:
            over.append((finite_abs, case_atol, floor[i] if floor is not None else float("nan")))
        if odd.any():  # NaN-blind statistics would read "max rel 0, cosine 1" beside the reason: inf and NaN
            max_rel, cos = float("inf"), float("nan")
        else:
            max_rel = max(max_rel, float(np.nanmax(diff / (np.abs(a64) + 1e-7))) if diff.size else 0.0)
            cos = _cosine(a64, b64, case_abs, tol)
        if cos < cosine or (np.isnan(cos) and not np.isnan(cosine)):
            cosine, worst_cos = cos, i
        if a.ndim >= 2 and a.shape[-1] > 1:
            agree_n += int(np.sum(np.argmax(a64, -1) == np.argmax(b64, -1)))
            agree_total += int(np.prod(a.shape[:-1]))
    agreement = agree_n / agree_total if agree_total else None
    pooled = tol.pooled_cosine and not odd_cases and len(refs) > 1
    if pooled:
        cosine = _pooled_cosine(refs, cands, tol)
    spread, rows = _spread(refs)
    scale = max((float(np.max(np.abs(r))) for r in refs if r.size), default=0.0)
    reasons = []
    vacuous = rows > 1 and spread <= VACUOUS_SPREAD * max(scale, 1e-6)
    weak = rows > 1 and not vacuous and spread <= WEAK_SPREAD * max(scale, 1e-6)
    if vacuous:
        reasons.append(f"vacuous check: the reference output is constant across {rows} different "
                       f"inputs (largest std {spread:.1e}); a dead or untrained model proves nothing")
    def at(i: int) -> str:
        return f" at input shapes {where[i]}" if where else ""

    if odd_cases:
        reasons.append(_nonfinite_reason(odd_cases, sum(r.size for r in refs), at))
    if over and atols is None:
        reasons.append(f"max abs error {max(o[0] for o in over):.3e} > atol {tol.atol:.0e}"
                       f"{at(worst_abs) if not odd_cases else ''}")
    elif over:
        worst = max(over, key=lambda t: t[0] / t[1])
        own = f"{worst[2]:.1e}" if np.isfinite(worst[2]) else "not measured"
        if worst[1] > tol.atol:
            reasons.append(f"max abs error {worst[0]:.3e} > atol {worst[1]:.1e} on one case (the edge's "
                           f"{tol.atol:.0e} lifted to float32's own error there: the reference's own, {own}, and "
                           "the outputs' resolution; modelkit.converters._float64)")
        elif np.isfinite(worst[2]):  # float32's own error there is below the edge's atol: nothing was lifted
            reasons.append(f"max abs error {worst[0]:.3e} > atol {tol.atol:.0e} (float32's own error there is "
                           f"smaller: the reference's own, {own}, and the outputs' resolution)")
        else:  # no Keras reference to measure its own error: only the outputs' resolution, below the atol
            reasons.append(f"max abs error {worst[0]:.3e} > atol {tol.atol:.0e} (the outputs' float32 resolution "
                           "there is smaller)")
    if cosine < tol.min_cosine:
        reasons.append(f"cosine similarity {cosine:.6f} < {tol.min_cosine}"
                       f"{' over all cases at once' if pooled else at(worst_cos)}")
    if agreement is not None and agreement < tol.min_argmax_agreement:
        reasons.append(f"argmax agreement {agreement:.3f} < {tol.min_argmax_agreement}")
    measured = [f for f in floor or [] if np.isfinite(f)]
    failed = worst_cos if cosine < tol.min_cosine else worst_abs if over else None
    return OutputParity(name, max_abs, max_rel, cosine, agreement, spread, not reasons, "; ".join(reasons),
                        max(measured) if measured else None, max(atols) if atols is not None else None, failed,
                        weak, scale, from_exact)


def _pooled_cosine(refs: list[np.ndarray], cands: list[np.ndarray], tol: Tolerance) -> float:
    """_cosine of every case's outputs at once (Tolerance.pooled_cosine)."""
    a = np.concatenate([r.astype(np.float64).ravel() for r in refs])
    b = np.concatenate([c.astype(np.float64).ravel() for c in cands])
    return _cosine(a, b, float(np.max(np.abs(a - b))) if a.size else 0.0, tol)


def _cosine(a: np.ndarray, b: np.ndarray, max_abs: float, tol: Tolerance) -> float:
    """The cosine similarity of `a` and `b` (float64; `max_abs` their largest difference). Outputs that differ by less
    than the atol and COSINE_NOISE have no direction worth judging, 1: a sigmoid far from its decision (1e-5 against
    an int8 0.0), a ReLU regressor at 0 against 3e-9."""
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if (na == 0 and nb == 0) or max_abs <= min(tol.atol, COSINE_NOISE):
        return 1.0
    return float(np.dot(a.ravel(), b.ravel()) / max(na * nb, 1e-300))


def _nonfinite_mismatch(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Where one side is NaN / inf and the other is not what it is (a number, or the other non-finite value)."""
    fa, fb = np.isfinite(a), np.isfinite(b)
    return (fa != fb) | (~fa & ~fb & ~((np.isnan(a) & np.isnan(b)) | (a == b)))


def _nonfinite_reason(odd_cases: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]], total: int, at: Any) -> str:
    """One reason naming what the non-finite values are, how many, and on which side: 'NaN at 3 of 640 values
    where the source gives numbers' says where to look (a where / select whose untaken branch is NaN or inf)."""
    count = sum(int(odd.sum()) for _, odd, _, _ in odd_cases)
    first, odd, a, b = odd_cases[0]
    cand_bad = odd & ~np.isfinite(b)
    where = cand_bad if cand_bad.any() else odd & ~np.isfinite(a)
    side, other, values, theirs = ("the converted model", "the source", b[where], a[where]) if cand_bad.any() else \
        ("the source", "the converted model", a[where], b[where])
    kinds = sorted({"NaN" if np.isnan(v) else "inf" if v > 0 else "-inf" for v in values.ravel()[:10000]})
    numbers = "numbers" if np.all(np.isfinite(theirs)) else "other values"
    hint = " (often a where / select whose branch not taken overflows or is NaN)" if cand_bad.any() else ""
    return (f"{side} gives {' / '.join(kinds)} at {count} of {total} values where {other} gives {numbers}"
            f"{at(first)}{hint}")


def _spread(refs: list[np.ndarray]) -> tuple[float, int]:
    """(largest std across rows, rows compared) of the reference output, over cases whose rows have one
    shape (a sequence output's shape follows the input's length, so only rows of equal length stack)."""
    groups: dict[tuple[int, ...], list[np.ndarray]] = {}
    for r in refs:
        if r.ndim:
            groups.setdefault(r.shape[1:], []).append(r.reshape(r.shape[0], -1).astype(np.float64))
    spread, rows = float("nan"), 0
    for parts in groups.values():
        stacked = np.concatenate(parts, axis=0)
        if stacked.shape[0] > 1 and stacked.shape[1]:
            std = float(np.max(np.std(stacked, axis=0)))
            spread = std if np.isnan(spread) else max(spread, std)
            rows = max(rows, stacked.shape[0])
    return spread, rows
