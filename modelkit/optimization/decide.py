"""The decision of `modelkit optimize`: accuracy drops, limits, the Pareto front and the winner.

Pure logic over the candidate dicts (the spec's records): nothing here loads or runs a model. The winner is
picked by p50_ms, the median of per-round medians (robust to this machine's noise), among the candidates that
meet every limit; when an exact (unquantized) candidate's 95 % interval overlaps the fastest's, the exact one
wins, since the noise cannot show the gain its accuracy would be traded for. Sizes are in MB of 2**20 bytes,
as modelkit's other reports write them.
"""
from __future__ import annotations

import math
from typing import Any

from ..errors import OptimizeError

BASELINE = "keras.predict"
STATISTIC = "p50_ms, median of per-round medians"
DEFAULT_LIMITS: dict[str, float | None] = {"max_accuracy_drop": 0.01, "max_p99_ms": None, "max_size_mb": None}
NO_LABELS = "no labelled data to gate accuracy (--data with y)"
MB = 2**20


def is_baseline(candidate: dict[str, Any]) -> bool:
    """The Keras predict row: measured for comparison, never the winner."""
    return candidate.get("key") == BASELINE or candidate.get("mode") == BASELINE


def measured_candidates(candidates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Those measured here, with a p50_ms (the rows the decision and the report's plots use)."""
    return [c for c in candidates if c.get("status") == "measured" and c.get("p50_ms") is not None]


def full_limits(limits: dict[str, Any] | None) -> dict[str, float | None]:
    """`limits` with the defaults filled in (max_accuracy_drop 0.01; None turns a limit off)."""
    out = dict(DEFAULT_LIMITS)
    out.update({k: v for k, v in (limits or {}).items() if k in DEFAULT_LIMITS})
    return out


def describe_limits(limits: dict[str, Any] | None) -> str:
    """The limits in words: 'accuracy drop <= 0.0100, p99 <= 2.00 ms, size <= 10.0 MB'."""
    lim = full_limits(limits)
    parts = []
    if lim["max_accuracy_drop"] is not None:
        parts.append(f"accuracy drop <= {lim['max_accuracy_drop']:.4f}")
    if lim["max_p99_ms"] is not None:
        parts.append(f"p99 <= {ms_text(lim['max_p99_ms'])} ms")
    if lim["max_size_mb"] is not None:
        parts.append(f"size <= {mb_text(lim['max_size_mb'])} MB")
    return ", ".join(parts) or "no limits"


def accuracy_drops(candidates: list[dict[str, Any]]) -> None:
    """Fill "accuracy_drop" of each measured candidate: the baseline accuracy minus its own.

    The baseline accuracy is the Keras predict row's, else the best exact (quantize None) candidate's. Without
    one (no labels), every drop is None; a candidate with no accuracy of its own gets None too.
    """
    measured = measured_candidates(candidates)
    base = next((c.get("accuracy") for c in measured if is_baseline(c) and c.get("accuracy") is not None), None)
    if base is None:
        exact = [c["accuracy"] for c in measured if c.get("quantize") is None and c.get("accuracy") is not None]
        base = max(exact) if exact else None
    for c in measured:
        acc = c.get("accuracy")
        c["accuracy_drop"] = None if base is None or acc is None else float(base) - float(acc)


def _relative(value: float, limit: float) -> float:
    return (value - limit) / limit if limit > 0 else math.inf


def _misses(candidate: dict[str, Any], limits: dict[str, Any] | None) -> list[tuple[str, float]]:
    """(what was missed, by how much relative to the limit) for each limit `candidate` misses."""
    if candidate.get("status") != "measured" or candidate.get("p50_ms") is None:
        reason = candidate.get("reason")
        return [(f"{candidate.get('status') or 'not measured'}" + (f": {reason}" if reason else ""), math.inf)]
    lim = full_limits(limits)
    out: list[tuple[str, float]] = []
    max_drop = lim["max_accuracy_drop"]
    drop = candidate.get("accuracy_drop")
    if max_drop is not None:
        if drop is None and candidate.get("quantize") is not None:
            out.append((NO_LABELS, math.inf))
        elif drop is not None and drop > max_drop:
            out.append((f"accuracy drop {drop:.4f} > {max_drop:.4f}", _relative(drop, max_drop)))
    max_p99, p99 = lim["max_p99_ms"], candidate.get("p99_ms")
    if max_p99 is not None:
        if p99 is None:
            out.append(("p99 unknown", math.inf))
        elif p99 > max_p99:
            rel = _relative(p99, max_p99)
            out.append((f"p99 {ms_text(p99)} ms > {ms_text(max_p99)} ms (+{100 * rel:.0f} %)", rel))
    max_mb, size = lim["max_size_mb"], candidate.get("size_bytes")
    if max_mb is not None:
        if size is None:
            out.append(("size unknown", math.inf))
        elif size / MB > max_mb:
            out.append((f"size {mb_text(size / MB)} MB > {mb_text(max_mb)} MB", _relative(size / MB, max_mb)))
    return out


def check(candidate: dict[str, Any], limits: dict[str, Any] | None) -> list[str]:
    """Each limit `candidate` misses, with its number and by how much ([] when it meets them all).

    A candidate that was not measured misses with its status and reason; a lossy one (quantize not None)
    without an accuracy drop misses with "no labelled data to gate accuracy (--data with y)".
    """
    return [msg for msg, _ in _misses(candidate, limits)]


def _dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def _point(c: dict[str, Any]) -> tuple[float, float, float]:
    size = c.get("size_bytes")
    return (float(c["p50_ms"]), float(c.get("accuracy_drop") or 0.0), math.inf if size is None else float(size))


def pareto_front(candidates: list[dict[str, Any]]) -> list[str]:
    """Keys of the measured candidates (not the baseline) that no other beats or equals on all of p50_ms,
    accuracy_drop (None counts as 0) and size_bytes, fastest first."""
    pts = [(c["key"], _point(c)) for c in measured_candidates(candidates) if not is_baseline(c)]
    front = [(k, p) for k, p in pts if not any(_dominates(q, p) for _, q in pts)]
    return [k for k, _ in sorted(front, key=lambda kp: kp[1])]


def _ci(c: dict[str, Any]) -> tuple[float, float]:
    ci = c.get("ci95_ms")
    return (float(ci[0]), float(ci[1])) if ci else (float(c["p50_ms"]), float(c["p50_ms"]))


def _overlap(a: dict[str, Any], b: dict[str, Any]) -> bool:
    (alo, ahi), (blo, bhi) = _ci(a), _ci(b)
    return alo <= bhi and blo <= ahi


def _size(c: dict[str, Any]) -> float:
    return math.inf if c.get("size_bytes") is None else float(c["size_bytes"])


def _figures(c: dict[str, Any]) -> str:
    lo, hi = _ci(c)
    drop = c.get("accuracy_drop")
    size = c.get("size_bytes")
    return (f"p50 {ms_text(c['p50_ms'])} ms (95 % CI {ms_text(lo)}-{ms_text(hi)})"
            + (f", p99 {ms_text(c['p99_ms'])} ms" if c.get("p99_ms") is not None else "")
            + (f", accuracy drop {drop:.4f}" if drop is not None else ", accuracy not measured")
            + (f", {mb_text(size / MB)} MB" if size is not None else ""))


def ms_text(v: float) -> str:
    """Milliseconds to 3 significant digits, keeping trailing zeros: 1.00, 0.450, 12.3, 143."""
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:#.3g}"


def mb_text(v: float) -> str:
    """Megabytes to 3 significant digits, so small models do not all read 0.0: 0.0133, 1.00, 12.3, 143."""
    return ms_text(v)


def _times(v: float) -> str:
    """A speed-up as modelkit's tables write it: 1419x, 7.3x, 0.41x."""
    return f"{v:.0f}x" if v >= 100 else f"{v:.2g}x" if v < 10 else f"{v:.1f}x"


def _closest(candidates: list[dict[str, Any]], limits: dict[str, Any] | None, n: int = 3) -> list[dict[str, Any]]:
    """The `n` measured candidates missing the fewest limits, then by the smallest summed relative miss."""
    scored = []
    for c in measured_candidates(candidates):
        if is_baseline(c):
            continue
        misses = _misses(c, limits)
        scored.append((len(misses), sum(r for _, r in misses), c["p50_ms"], c, misses))
    scored.sort(key=lambda s: s[:3])
    return [{"key": c["key"], "missed": [m for m, _ in misses], "p50_ms": c["p50_ms"], "p99_ms": c.get("p99_ms"),
             "accuracy_drop": c.get("accuracy_drop"), "size_bytes": c.get("size_bytes")}
            for _, _, _, c, misses in scored[:n]]


def _no_winner(candidates: list[dict[str, Any]], limits: dict[str, Any] | None,
               rejected: dict[str, list[str]]) -> OptimizeError:
    closest = _closest(candidates, limits)
    said = describe_limits(limits)
    if closest:
        names = "; ".join(f"{c['key']} ({', '.join(c['missed'])})" for c in closest)
        hint = " or give --data with labels (y)" if any(NO_LABELS in m for c in closest for m in c["missed"]) else ""
        msg = (f"no candidate meets the limits ({said}); the closest: {names}. Loosen a limit (--max-accuracy-drop, "
               f"--max-p99-ms, --max-size-mb){hint}")
    else:
        firsts = "; ".join(f"{k}: {v[0]}" for k, v in list(rejected.items())[:3])
        msg = f"no candidate was measured ({len(rejected)} tried" + (f"; {firsts})" if firsts else ")")
    report = {"limits": full_limits(limits), "closest": closest, "rejected": rejected}
    return OptimizeError(msg, report=report)


def choose(candidates: list[dict[str, Any]], limits: dict[str, Any] | None) -> dict[str, Any]:
    """The decision: {"winner", "why", "front", "rejected", "statistic"}; fills "accuracy_drop" first.

    The winner has the lowest p50_ms among the candidates (never the baseline) meeting every limit, except that
    an exact candidate whose ci95_ms overlaps the fastest's wins over a faster lossy one (the smallest such,
    then the fastest). Raises OptimizeError listing the 3 closest candidates when none meets the limits.
    """
    accuracy_drops(candidates)
    rejected: dict[str, list[str]] = {}
    ok: list[dict[str, Any]] = []
    for c in candidates:
        if is_baseline(c):
            continue
        missed = check(c, limits)
        if missed:
            rejected[c["key"]] = missed
        else:
            ok.append(c)
    if not ok:
        raise _no_winner(candidates, limits, rejected)
    fastest = min(ok, key=lambda c: (c["p50_ms"], _size(c)))
    winner = fastest
    exact_near = [c for c in ok if c.get("quantize") is None and _overlap(c, fastest)]
    if fastest.get("quantize") is not None and exact_near:
        winner = min(exact_near, key=lambda c: (_size(c), c["p50_ms"]))
        lo, hi = _ci(fastest)
        why = (f"{winner['key']} won: exact, {_figures(winner)}; {fastest['key']} ({fastest.get('quantize')}) "
               f"was faster at p50 {ms_text(fastest['p50_ms'])} ms (95 % CI {ms_text(lo)}-{ms_text(hi)}) but "
               f"within this machine's noise (the intervals overlap), so the exact one is taken: no accuracy lost "
               f"for a gain the noise cannot show; limits: {describe_limits(limits)}")
    else:
        why = (f"{winner['key']} won: {_figures(winner)}; the lowest p50 of {len(ok)} meeting the limits "
               f"({describe_limits(limits)})")
    base = next((c for c in measured_candidates(candidates) if is_baseline(c)), None)
    if base is not None:
        speedup = _times(base["p50_ms"] / winner["p50_ms"])
        on = f"{base['backend']}, " if base.get("backend") else ""
        why += f"; {speedup} the speed of Keras predict ({on}{ms_text(base['p50_ms'])} ms)"
    return {"winner": winner["key"], "why": why + ".", "front": pareto_front(candidates), "rejected": rejected,
            "statistic": STATISTIC}
