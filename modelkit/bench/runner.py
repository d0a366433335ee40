"""The parent side of `modelkit bench`: plan the jobs (artifacts and Keras baselines), run each in its
own child process, then add sizes, FLOPs, roofline numbers and ratios to the baselines.

The parent imports no framework: engines load only in the children (modelkit._child).
"""
from __future__ import annotations

import datetime as _dt
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import _child
from .. import manifest as _manifest
from .._progress import steps, verbosity
from ..errors import FormatError, InputError, ModelkitError, retyped
from ..formats import Format, detect
from .roofline import achieved, machine_peak

SCHEMA_ID = "modelkit.bench/1"


@dataclass
class Job:
    path: Path
    format: Format
    mode: str  # "run" (the runtime engine) or "keras.predict"
    kind: str  # "artifact" or "baseline"
    source: Path | None  # the .keras this artifact was converted from (None if unknown)
    shown: str | None = None  # the name in rows and plots: the file name, else the path as given where two clash

    @property
    def label(self) -> str:
        name = self.shown or self.path.name
        return f"{name} (keras.predict)" if self.mode == "keras.predict" else name


def keras_source(path: Path, fmt: Format) -> Path | None:
    """The .keras at the root of an artifact's conversion chain, following manifests; None if unknown."""
    seen: set[Path] = set()
    current, current_fmt = path.resolve(), fmt
    while current not in seen:
        if current_fmt == Format.KERAS:
            return current
        seen.add(current)
        m = _manifest.read(current)
        src = (m.source or {}) if m else {}
        if not src.get("path"):
            return None
        nxt = _source_file(current, src)
        if nxt is None:
            return None
        current, current_fmt = nxt.resolve(), Format.parse(src.get("format") or detect(nxt))
    return None


def _source_file(artifact: Path, src: dict[str, Any]) -> Path | None:
    """The file a manifest's source names. Its path is as the conversion was given it, relative to the folder
    `modelkit convert` ran in: from another folder it is looked for beside the artifact and in the folders
    above it (`--out all/` puts the source one level up). A file is taken only when its sha256 is the recorded
    one, the one at the named path too (another folder's m.keras is another model)."""
    named = Path(src["path"])
    recorded = src.get("sha256")
    if named.exists() and (not recorded or named.is_dir() or _manifest.sha256_of(named) == recorded):
        return named
    if named.is_absolute() or not recorded:
        return None
    for base in list(artifact.parents)[:4]:
        candidate = base / named
        if candidate.is_file() and _manifest.sha256_of(candidate) == src["sha256"]:
            return candidate
    return None


def plan_jobs(artifacts: list[str | os.PathLike], baseline: bool = True) -> list[Job]:
    """Check every artifact (exists, known format, an engine for it) and list the jobs to run."""
    from ..runtime import ENGINES

    if not artifacts:
        raise InputError("no artifacts to benchmark")
    jobs: list[Job] = []
    for a in artifacts:
        p = Path(a)
        fmt = detect(p)  # FormatError for a missing path or an unknown format
        if fmt not in ENGINES:
            raise FormatError(f"{p}: no runtime engine for format '{fmt.value}' yet; benchmarkable formats: "
                              f"{', '.join(f.value for f in ENGINES)}")
        jobs.append(Job(p, fmt, "run", "artifact", keras_source(p, fmt)))
    for j, shown in zip(jobs, _shown([j.path for j in jobs])):
        j.shown = shown
    if not baseline:
        return jobs
    given = {j.path.resolve() for j in jobs if j.format == Format.KERAS}
    sources = list(dict.fromkeys(j.source for j in jobs if j.source is not None))
    base: list[Job] = []
    for src, shown in zip(sources, _shown(sources)):
        base.append(Job(src, Format.KERAS, "keras.predict", "baseline", src, shown))
        if src not in given:
            base.append(Job(src, Format.KERAS, "run", "baseline", src, shown))
    return base + jobs


def _shown(paths: list[Path]) -> list[str | None]:
    """Job.shown for each path: None (its file name) unless another path has that file name, then the path as
    given (all/cnn.onnx and int8/cnn.onnx: two rows and plot groups named cnn.onnx otherwise)."""
    names = [p.name for p in paths]
    return [str(p) if names.count(p.name) > 1 else None for p in paths]


def run_bench(artifacts: list[str | os.PathLike], batches: tuple[int, ...] = (1, 8, 32), threads: int | None = None,
              device: str = "cpu", iterations: int | None = None, duration: float | None = 10.0, warmup: int = 3,
              baseline: bool = True, keep_going: bool = False, backend: str | None = None,
              timeout: float | None = None, verbose: bool = True) -> dict[str, Any]:
    """Benchmark artifacts (and their Keras baselines) and return the result document (see schema.json).

    Exactly one of iterations / duration (seconds per batch size). With keep_going, a failing artifact
    becomes rows with an "error" instead of stopping the run. Progress (a line per row, on a terminal a bar
    with an ETA) goes to stderr; verbose=False turns it off for the call, as `modelkit -q` does.
    """
    if iterations is not None:
        duration = None
    if (iterations is None) == (duration is None):
        raise InputError("give exactly one of iterations or duration")
    jobs = plan_jobs(artifacts, baseline)
    total = len(jobs) * len(batches)
    rows: list[dict[str, Any]] = []
    with verbosity(verbose), steps(total, "bench") as bar:  # a bar over the rows on a terminal
        for j, job in enumerate(jobs):
            index = j * len(batches) + 1
            kwargs = {"artifact": str(job.path), "mode": job.mode, "batches": list(batches), "threads": threads,
                      "device": "cpu" if job.kind == "baseline" else device, "iterations": iterations,
                      "duration": duration, "warmup": warmup, "label": job.label, "index": index, "total": total,
                      "backend": backend if job.format == Format.KERAS else None}
            try:
                res = _child.run("modelkit.bench.worker:measure", kwargs, backend=kwargs["backend"], timeout=timeout,
                                 what=f"the benchmark of {job.path.name}", fresh=True)  # RSS, imports: its own
            except ModelkitError as exc:
                if not keep_going and job.kind == "baseline":  # the user's artifacts may be fine: say how to go on
                    raise retyped(type(exc), f"the Keras baseline {job.path.name} could not run: {exc}; bench "
                                  "without it with --no-baseline (baseline=False)",
                                  getattr(exc, "report", None)) from exc
                if not keep_going:
                    raise
                print(f"[{index}/{total}] {job.label} FAILED: {exc}", file=sys.stderr, flush=True)
                res = {"error": f"{type(exc).__name__}: {exc}"}
            rows.extend(_rows(job, res, batches, threads, device))
            bar.advance(by=len(batches))
    machine = machine_peak()
    _add_flops(rows, jobs, batches, machine.get("peak_gflops"))
    _add_ratios(rows)
    return {"schema": SCHEMA_ID, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": machine,
            "settings": {"batches": list(batches), "threads": threads, "device": device, "iterations": iterations,
                         "duration_s": duration, "warmup": warmup, "baseline": baseline},
            "rows": rows}


def _rows(job: Job, res: dict[str, Any], batches: tuple[int, ...], threads: int | None,
          device: str) -> list[dict[str, Any]]:
    size = _manifest.size_of(job.path)
    engine = res.get("engine", "?")
    if job.mode == "keras.predict":
        engine = engine.replace("keras/", "keras.predict/")
    common = {"artifact": str(job.path), "name": job.label, "format": job.format.value, "engine": engine,
              "mode": job.mode, "kind": job.kind, "source": str(job.source) if job.source else None,
              "device": "cpu" if job.kind == "baseline" else device, "threads": threads, "size_bytes": size,
              "load_s": res.get("load_s"), "inputs": res.get("inputs"), "frameworks": res.get("frameworks", []),
              "rss_start_bytes": res.get("rss_start_bytes"), "error": res.get("error")}
    if "error" in res:
        return [{**common, "batch": b, "first_call_s": None, "iterations": 0, "latency_ms": None,
                 "throughput_sps": None, "peak_rss_bytes": None} for b in batches]
    return [{**common, **{k: v for k, v in r.items() if k != "timed_s"}} for r in res["batches"]]


def _onnx_for(source: Path | None, jobs: list[Job]) -> Path | None:
    """The ONNX graph to count FLOPs on: one benchmarked with this source, else one next to it/them."""
    for j in jobs:
        if j.format == Format.ONNX and j.source == source:
            return j.path
    if source is None:
        return None
    for folder in dict.fromkeys([source.parent, *(j.path.parent for j in jobs)]):
        for cand in sorted(folder.glob("*.onnx")):
            try:
                if keras_source(cand, Format.ONNX) == source:
                    return cand
            except ModelkitError:  # an unreadable neighbour is just not the one we are looking for
                continue
    return None


def _add_flops(rows: list[dict[str, Any]], jobs: list[Job], batches: tuple[int, ...], peak: float | None) -> None:
    from .flops import count_flops

    cache: dict[tuple[str, int], tuple[int | None, str | None]] = {}
    for row in rows:
        src = Path(row["source"]) if row["source"] else None
        onnx_path = _onnx_for(src, jobs) if src else (Path(row["artifact"]) if row["format"] == "onnx" else None)
        key = (str(onnx_path), row["batch"])
        if key not in cache:
            cache[key] = (None, None)
            if onnx_path is not None:
                try:
                    cache[key] = (count_flops(onnx_path, row["batch"])["total"], str(onnx_path))
                except ModelkitError as exc:
                    print(f"note: no FLOPs for {onnx_path.name}: {exc}", file=sys.stderr)
        row["flops"], row["flops_from"] = cache[key]
        p50 = (row["latency_ms"] or {}).get("p50")
        row["gflops_per_s"], row["fraction_of_peak"] = achieved(row["flops"], p50 / 1e3 if p50 else None, peak)


def _add_ratios(rows: list[dict[str, Any]]) -> None:
    """speedup_vs_predict / speedup_vs_direct: the baseline's p50 latency over this row's, same source and batch
    (the speed-up: > 1 is faster, the convention of every modelkit table)."""
    def p50(r: dict[str, Any]) -> float | None:
        return (r["latency_ms"] or {}).get("p50")

    predict = {(r["source"], r["batch"]): p50(r) for r in rows if r["mode"] == "keras.predict"}
    direct = {(r["source"], r["batch"]): p50(r) for r in rows
              if r["mode"] == "run" and r["format"] == "keras" and r["source"] == str(Path(r["artifact"]).resolve())}
    for r in rows:
        key, mine = (r["source"], r["batch"]), p50(r)
        r["speedup_vs_predict"] = predict[key] / mine if mine and predict.get(key) else None
        r["speedup_vs_direct"] = direct[key] / mine if mine and direct.get(key) else None
