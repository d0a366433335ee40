"""Which candidates of `modelkit optimize` are measured together, and the measurement cache around them.

Candidates measured in one measure() call share its interleaved rounds, so their figures compare. A candidate
measured before (same artifact bytes, threads, batch, evaluation rows, machine, modelkit; the Keras baseline per
backend) comes from the cache. With more than MAX_WORKERS left to measure (one process each), every build is
measured at the most threads first; then every thread count of the FINALISTS fastest builds is measured again,
all of them in one set, so the thread counts of a build are compared side by side, never across two sets.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

MAX_WORKERS = 16  # candidates measured side by side in one interleaved set (one process each)
FINALISTS = 4  # builds whose every thread count is measured when there are more than MAX_WORKERS candidates
MEASURED_KEYS = ("status", "p50_ms", "p99_ms", "ci95_ms", "rounds_ms", "calls", "accuracy", "load_s", "batch")


def staged(cands: list[dict[str, Any]], batch: int, prepared: dict[str, Any], counts: tuple[int, ...],
           root: Path, deadline: float, rounds: int, bar: Any) -> list[dict[str, Any]]:
    """Every candidate, the built ones measured (or taken from the cache under root/measured) as the module
    says; those the finalist stage left out are 'skipped' with the reason."""
    from . import cache
    from . import measure as _measure
    from .decide import is_baseline

    def key(c: dict[str, Any]) -> str:
        return measurement_key(c, batch, prepared.get("eval_sha256") or prepared["data_sha256"])  # what it ran on

    ready = [c for c in cands if c["status"] == "built"]
    results: dict[str, dict[str, Any]] = {}
    for c in ready:
        hit = cache.lookup(key(c), cache_dir=root / "measured")
        if hit is not None:
            results[c["key"]] = {**c, **hit, "from_cache": True}
    todo = [c for c in ready if c["key"] not in results]
    if len(todo) > MAX_WORKERS:
        first = [c for c in todo if c.get("threads") in (None, max(counts))]
        results.update(_run(_measure.measure, first, batch, prepared, deadline, rounds, bar, "every build"))
        ranked = sorted((r for r in results.values() if r.get("status") == "measured" and not is_baseline(r)),
                        key=lambda r: r["p50_ms"])
        finalists = {r["build"] for r in ranked[:FINALISTS]}
        todo = [c for c in ready if c.get("build") in finalists and not results.get(c["key"], {}).get("from_cache")]
    results.update(_run(_measure.measure, todo, batch, prepared, deadline, rounds, bar, "side by side"))
    for c in ready:
        r = results.get(c["key"])
        if r is not None and r.get("status") == "measured" and not r.get("from_cache"):
            cache.store(key(c), {k: r[k] for k in r if k in MEASURED_KEYS}, cache_dir=root / "measured")
    out = []
    for c in cands:
        r = results.get(c["key"], c)
        if r.get("status") == "built":
            r = {**r, "status": "skipped", "reason": "not a finalist: slower than the "
                                                     f"{FINALISTS} fastest builds at {max(counts)} threads"}
        out.append(r)
    return out


def measurement_key(c: dict[str, Any], batch: int, data_sha256: str | None) -> str:
    """The measurement cache key of candidate `c`; the Keras baseline's includes its backend (predict's cost
    differs by tens of times between them, and KERAS_BACKEND picks it)."""
    from . import cache

    mode = c.get("mode", "run") + (f":{c['backend']}" if c.get("backend") else "")
    return cache.measurement_key(c.get("sha256") or c["build"], c.get("threads"), batch, data_sha256, mode)


def _run(measure: Any, todo: list[dict[str, Any]], batch: int, prepared: dict[str, Any], deadline: float,
         rounds: int, bar: Any, what: str) -> dict[str, dict[str, Any]]:
    """One interleaved set: copies of `todo` measured (measure() fills what it is given; the candidates stay as
    built, so a finalist measured in the first set is measured again, beside its other thread counts)."""
    if not todo:
        return {}
    bar.note(f"measuring {len(todo)} candidates {what}, {rounds} interleaved rounds")
    done = measure([dict(c) for c in todo], batch=batch, data=prepared["data"], rounds=rounds, deadline=deadline)
    bar.advance(f"measured {sum(1 for d in done if d.get('status') == 'measured')} of {len(todo)}")
    return {d["key"]: d for d in done}
