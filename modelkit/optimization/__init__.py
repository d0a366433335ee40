"""`modelkit optimize`: the fastest faithful artifact for a target, chosen by measurement under limits.

    plan (candidates.py) -> build each with its gate (build.py) -> measure side by side (measure.py, cached:
    cache.py) -> limits, Pareto front, winner (decide.py) -> DIR: the winner, its manifest with the decision,
    report.html, candidates.json (+ a deployment package)

The budget covers everything: builds run best-first while the time left exceeds what measuring needs; what the
budget did not reach stays in the report as "skipped". Nothing heavy is imported here.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import _atomic
from .. import manifest as _manifest
from .._cache import cache_root
from .._progress import steps
from ..errors import InputError, OptimizeError
from ..formats import strip_suffix
from .stages import staged

__all__ = ["optimize", "OptimizeResult", "DEFAULT_BUDGET_S"]

DEFAULT_BUDGET_S = 15 * 60
MIN_MEASURE_S = 20.0
TVM_TUNE_SHARE = 0.2  # of budgets of 10 minutes and more; shorter budgets compile TVM untuned


@dataclass
class OptimizeResult:
    path: str  # the winner in DIR
    out_dir: str
    winner: dict[str, Any]
    decision: dict[str, Any]
    candidates: list[dict[str, Any]]
    report: str
    package: str | None
    limits: dict[str, Any] | None = None  # those the decision applied (max_accuracy_drop, max_p99_ms, max_size_mb)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def optimize(model: str | os.PathLike, target: str = "server-cpu", data: str | os.PathLike | None = None,
             max_accuracy_drop: float = 0.01, max_p99_ms: float | None = None, max_size_mb: float | None = None,
             batch: int = 1, budget: str | float | None = None, out: str | os.PathLike | None = None,
             package: str | None = None, formats: tuple[str, ...] | None = None,
             precisions: tuple[str, ...] | None = None, threads: tuple[int, ...] | None = None,
             calibration_data: str | os.PathLike | None = None, rounds: int = 5, force: bool = False,
             cache_dir: str | os.PathLike | None = None) -> OptimizeResult:
    """Build, gate and measure every artifact that fits `target`, and write the fastest one meeting the limits.

    `data`: an .npz of real inputs ('x' or one array per input name) with 'y' labels: parity and the accuracy
    gate run on it, and lossy precisions are tried only with labels. `budget` ('15m', seconds) bounds the whole
    search. `formats` / `precisions` / `threads` narrow the candidates. Raises OptimizeError (listing the
    closest candidates) when none meets the limits. Details: docs/optimize.md.
    """
    from . import candidates as _cands

    t0 = time.monotonic()
    source = _check_model(model)
    target = _cands.check_target(target)
    limits = _limits(max_accuracy_drop, max_p99_ms, max_size_mb)
    if int(batch) < 1:
        raise InputError(f"batch must be a positive integer, got {batch}")
    if package is not None and package not in _cands.PACKAGE_FORMATS:
        raise OptimizeError(f"unknown package target '{package}'; valid: {', '.join(_cands.PACKAGE_FORMATS)}")
    budget_s = _budget(budget)
    _cands.plan(target, formats, precisions, package=package)  # a format or precision it refuses: before any work
    dest = Path(out) if out is not None else source.with_name(f"{strip_suffix(source.name)}_optimized")
    _atomic.check_writable(dest, force)
    away = _cands.elsewhere(target)  # another machine's artifacts: built and gated here, not measured
    if away:
        from .elsewhere import check_limits

        check_limits(target, limits)
    counts = None if away else _cands.thread_counts(threads)
    root = Path(cache_dir) if cache_dir is not None else cache_root() / "optimize"
    sha = _manifest.sha256_of(source)
    work = root / "builds" / sha[:16]
    work.mkdir(parents=True, exist_ok=True)
    from .data import mask_padding, prepare

    prepared = mask_padding(prepare(data, source, work, calibration_data), source, work)
    gate = {"model_sha256": sha, "data": prepared["data"], "calibration": prepared["calibration"],
            "data_sha256": prepared["data_sha256"], "max_accuracy_drop": limits["max_accuracy_drop"],
            "batch": int(batch)}
    builds = _cands.plan(target, formats, precisions, labelled=prepared["labelled"], package=package,
                         unlabelled=prepared.get("unlabelled"))
    deadline = t0 + budget_s
    planned = [b for b in builds if b["status"] == "planned"]
    with steps(len(planned) + 1, "optimize") as bar:
        bar.note(f"optimize {source.name} for {target}: {len(planned)} builds"
                 + (" (another machine's: built and gated here, not measured)" if away else
                    f" x threads {list(counts or ())}") + f", budget {budget_s:.0f} s; {prepared['split']}")
        builds = _build_all(source, builds, work, gate, deadline, budget_s, bar, data, tune=not away)
        cands = [c for b in builds for c in (_cands.with_threads(b, counts) if b["status"] == "built"
                                             else [{**b, "key": b["build"], "threads": None}])]
        if away:
            from . import elsewhere

            measured = elsewhere.unmeasured(cands, target)
        else:
            cands.append(_baseline(source))
            measured = staged(cands, int(batch), prepared, counts, root, deadline, rounds, bar)
    from . import decide

    decide.accuracy_drops(measured)
    record = {"model": str(source), "model_sha256": sha, "target": target, "batch": int(batch), "limits": limits,
              "candidates": measured, "budget_s": budget_s, "data": prepared, "machine": _machine()}
    try:
        decision = elsewhere.choose(measured, limits, target) if away else decide.choose(measured, limits)
    except OptimizeError as exc:
        record.update(decision=None, spent_s=round(time.monotonic() - t0, 1))
        _keep_report(record, work)
        raise OptimizeError(f"{exc} (report: {work / 'report.html'})", getattr(exc, "report", None)) from None
    if package == "browser":
        decision["why"] += (" Timed with native onnxruntime on this machine: in a browser onnxruntime-web runs the "
                            "same file (WebAssembly), at its own speed.")
    record.update(decision=decision, spent_s=round(time.monotonic() - t0, 1))
    return _write(record, dest, force, package)


def _build_all(source: Path, builds: list[dict[str, Any]], work: Path, gate: dict[str, Any], deadline: float,
               budget_s: float, bar: Any, data: str | os.PathLike | None = None, tune: bool = True
               ) -> list[dict[str, Any]]:
    """Each planned build in turn while the budget leaves time to measure; the rest 'skipped'. The first
    artifact built (or reused) checks that `data` fits the model (InputError), before any other build. `tune`:
    whether TVM may tune here (not for another machine's library, which tunes on its device)."""
    from .build import build, check_data

    reserve = max(min(MIN_MEASURE_S, budget_s / 2), 0.25 * budget_s)  # the shortest budget builds for half
    tune_s = TVM_TUNE_SHARE * budget_s if budget_s >= 600 and tune else None
    done = []
    unjudged = None  # why the labels cannot judge a lossy build's accuracy, once the first artifact says so
    for b in builds:
        if b["status"] != "planned":
            done.append(b)
            continue
        if unjudged and b["quantize"] is not None:
            done.append({**b, "status": "skipped", "reason": unjudged})
            bar.advance(f"{b['build']}: skipped: {unjudged}")
            continue
        left = deadline - reserve - time.monotonic()
        if left <= 5:
            done.append({**b, "status": "skipped", "reason": "the budget ran out before it was built (--budget)"})
            bar.advance(f"{b['build']}: skipped (budget)")
            continue
        tuning = min(tune_s, left / 2) if tune_s and b["format"] == "tvm" else None
        r = build(source, b, work, gate, timeout=left, tune_budget=tuning)
        if r["status"] == "built" and data is not None:
            unjudged = check_data(Path(r["path"]), data)  # a reused build ran no gate on this data
            data = None
        done.append(r)
        if r["status"] == "built":
            how = "reused" if r.get("cached") else f"{r.get('build_seconds', 0):.1f} s"
            bar.advance(f"{b['build']}: built ({how})")
        else:
            again = f" (remembered; delete {work / 'failed.json'} to retry)" if r.get("cached") else ""
            bar.advance(f"{b['build']}: {r['status']}{again}: {r['reason']}")
    return done


def _write(record: dict[str, Any], dest: Path, force: bool, package: str | None) -> OptimizeResult:
    """DIR: the winner (and its manifest, with the decision), report.html, candidates.json, the package."""
    from . import report

    decision = record["decision"]
    winner = next(c for c in record["candidates"] if c["key"] == decision["winner"])
    art = Path(winner["path"])
    with _atomic.atomic_path(dest, force=force) as tmp:
        tmp.mkdir()
        placed = tmp / art.name
        (shutil.copytree if art.is_dir() else shutil.copy2)(art, placed)
        m = _manifest.read(art)
        if m is not None:
            m.extra = {**(m.extra or {}), "optimize": _decision_record(record, winner)}
            _manifest.write(placed, m)
        (tmp / "candidates.json").write_text(json.dumps(record, indent=1, default=str))
        report.write_html(record, tmp / "report.html")
        pkg = None
        if package == "browser":  # onnxruntime-web + the winner's ONNX file, a static folder
            from ..web.bundle import build_bundle

            pkg = tmp / "package-browser"
            build_bundle(placed, pkg)
        elif package is not None:
            from ..serving.packagers import package as _package

            threads = winner.get("threads") if package in ("triton", "kserve") else None  # as it was measured
            pkg = _package(placed, package, tmp / f"package-{package}", **({"threads": threads} if threads else {}))
    final = dest / art.name
    return OptimizeResult(path=str(final), out_dir=str(dest), winner=winner, decision=decision,
                          candidates=record["candidates"], report=str(dest / "report.html"),
                          package=str(dest / pkg.name) if pkg is not None else None, limits=record["limits"])


def _decision_record(record: dict[str, Any], winner: dict[str, Any]) -> dict[str, Any]:
    """What the winner's manifest keeps of the search: limits, what was measured, its figures and why."""
    keep = ("key", "format", "quantize", "threads", "engine", "status", "reason", "p50_ms", "p99_ms", "ci95_ms",
            "accuracy", "accuracy_drop", "size_bytes")
    return {"target": record["target"], "batch": record["batch"], "limits": record["limits"],
            "winner": {k: winner.get(k) for k in keep}, "why": record["decision"].get("why"),
            "front": record["decision"].get("front"), "statistic": record["decision"].get("statistic"),
            "candidates": [{k: c.get(k) for k in keep} for c in record["candidates"]],
            "budget_s": record["budget_s"], "spent_s": record["spent_s"], "machine": record["machine"],
            "data": {k: record["data"].get(k) for k in ("data_sha256", "rows", "split")}}


def _keep_report(record: dict[str, Any], work: Path) -> None:
    from . import report

    report.write_html(record, work / "report.html")


def _baseline(source: Path) -> dict[str, Any]:
    from .._backend import requested_backend
    from .decide import BASELINE

    return {"key": BASELINE, "build": BASELINE, "format": "keras", "quantize": None,
            "engine": "keras", "backend": requested_backend(), "mode": BASELINE, "threads": None,
            "path": str(source), "status": "built",
            "reason": None, "size_bytes": _manifest.size_of(source), "sha256": _manifest.sha256_of(source)}


def _check_model(model: str | os.PathLike) -> Path:
    p = Path(model)
    if not p.is_file():
        raise InputError(f"{p}: no such file")
    if not p.name.endswith(".keras"):
        raise OptimizeError(f"{p}: optimize starts from a .keras model (it converts it to every format itself)")
    from ..keras_io.files import check_keras_archive

    check_keras_archive(p)  # a damaged file is one LoadError now, not every build failing with it
    return p.resolve()


def _limits(max_accuracy_drop: float, max_p99_ms: float | None, max_size_mb: float | None) -> dict[str, Any]:
    from ..converters.quantize import check_max_drop

    for name, v in (("max_p99_ms", max_p99_ms), ("max_size_mb", max_size_mb)):
        if v is not None and not float(v) > 0:
            raise InputError(f"{name} must be a positive number, got {v}")
    return {"max_accuracy_drop": check_max_drop(max_accuracy_drop),
            "max_p99_ms": None if max_p99_ms is None else float(max_p99_ms),
            "max_size_mb": None if max_size_mb is None else float(max_size_mb)}


def _budget(budget: str | float | None) -> float:
    """'15m', '90s', '1h30m' or seconds (the units `compile --budget` takes)."""
    from ..errors import ConversionError
    from ..targets.tvm.tuning import parse_budget

    if budget is None:
        return float(DEFAULT_BUDGET_S)
    try:
        seconds = parse_budget(budget)
    except ConversionError as exc:
        raise InputError(f"bad budget '{budget}': use e.g. 90s, 15m, 1h30m") from exc
    if seconds is None or seconds < MIN_MEASURE_S:
        raise InputError(f"budget '{budget}' is too short: at least {MIN_MEASURE_S:.0f} s (builds and measuring)")
    return seconds


def _machine() -> dict[str, Any]:
    from ..bench.roofline import machine_peak

    peak = machine_peak()
    return {k: peak.get(k) for k in ("cpu", "logical_cpus", "physical_cores", "clock_mhz", "simd")}
