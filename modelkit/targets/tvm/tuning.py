"""MetaSchedule tuning with a trial count or a time budget, and a persistent tuning database.

The database lives in a cache folder keyed by the model and the target
(`$MODELKIT_CACHE_DIR/tvm/<key>/` or `~/.cache/modelkit/tvm/<key>/`), so a second compile of the same
model for the same target applies it without tuning again. The scheduler (scheduler.py) commits every
batch of trials to the database as soon as it is measured, so an interrupted tuning run (Ctrl-C, a
budget running out) keeps the records so far and the next compile resumes from them.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from ... import _atomic
from ..._progress import steps
from ..._text import progress
from ...errors import ConversionError, TuningInterrupted

WORKLOADS = "database_workload.json"
RECORDS = "database_tuning_record.json"
STATUS = "modelkit_tuning.json"  # seconds of tuning spent on the database so far
TRIALS_PER_ITER = 4      # small rounds: progress shows often and budgets stop close to their end
BUILD_TIMEOUT_S = 300.0  # generous: a loaded 2-core machine links candidates slowly
RUN_TIMEOUT_S = 120.0


def cache_root() -> Path:
    """Where tuning databases live: the user's cache folder (modelkit._cache), under tvm/."""
    from ..._cache import cache_root as user_cache

    return user_cache() / "tvm"


def cache_key(model_sha256: str, tvm_target: dict[str, Any], batch: int, tvm_version: str) -> str:
    """Same model bytes + same target dict + same batch + same TVM -> same database."""
    blob = json.dumps({"model": model_sha256, "target": tvm_target, "batch": batch, "tvm": tvm_version},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def count_records(db_dir: Path) -> int:
    """Trials measured so far (one line per record; a line cut by an interrupt is not counted)."""
    path = Path(db_dir) / RECORDS
    if not path.is_file():
        return 0
    with open(path, "rb") as fh:
        return sum(1 for line in fh if line.endswith(b"\n") and line.strip())


def parse_budget(text: str | float | int | None) -> float | None:
    """'90s', '10m', '1h', '1h30m' or a number of seconds -> seconds."""
    if text is None or text == "":
        return None
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        import re

        s = str(text).strip().lower()
        if re.fullmatch(r"\d+(\.\d+)?", s):
            seconds = float(s)
        else:
            parts = re.findall(r"(\d+(?:\.\d+)?)\s*([hms])", s)
            if not parts or "".join(f"{n}{u}" for n, u in parts) != s.replace(" ", ""):
                raise ConversionError(f"bad budget '{text}': use e.g. 90s, 10m, 1h30m")
            seconds = sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)
    if seconds <= 0:
        raise ConversionError(f"the tuning budget must be positive, got '{text}'")
    return seconds


def tune(mod: Any, tvm_target: Any, db_dir: Path, trials: int | None, budget_s: float | None,
         log: Any = None) -> tuple[Any, dict[str, Any]]:
    """Tune the prepared (fused) module's tasks into the database at db_dir; return (database, info).

    trials and budget_s are totals for the database: a database that holds `trials` records, or on
    which `budget_s` of tuning was already spent, is reused without tuning; otherwise tuning runs
    what is missing, stopping within one batch once the budget is spent. Ctrl-C stops after the
    batch in flight (a second Ctrl-C at once) and raises TuningInterrupted; every batch measured
    before it is already in the database, and the next call resumes.
    """
    from tvm.s_tir import meta_schedule as ms

    log = log or _stderr
    db_dir = Path(db_dir)
    db_dir.mkdir(parents=True, exist_ok=True)
    before, spent = count_records(db_dir), spent_seconds(db_dir)
    info: dict[str, Any] = {"cache_dir": str(db_dir), "trials_requested": trials, "budget_s": budget_s,
                            "records_before": before, "trials_run": 0, "reused": False, "interrupted": False}
    database = ms.database.JSONDatabase(path_workload=str(db_dir / WORKLOADS),
                                        path_tuning_record=str(db_dir / RECORDS))
    plan = _plan(before, spent, trials, budget_s)
    if plan is None:
        log(f"[tune] reusing {before} tuning records from {db_dir} (no new trials)")
        info.update(reused=True, records_after=before, seconds=0.0)
        return database, info
    todo, left_s = plan
    tasks = ms.relax_integration.extract_tasks(mod, tvm_target)
    if not tasks:
        log("[tune] nothing to tune (no tunable operators)")
        info.update(records_after=before, seconds=0.0, tasks=0)
        return database, info
    if before:
        log(f"[tune] resuming from {before} records" + (f" and {spent:.0f} s already spent" if spent else ""))
    log(f"[tune] {len(tasks)} tasks, {todo if trials is not None else 'unlimited'} trials"
        f"{f', budget {left_s:.0f} s' if left_s else ''}; database {db_dir}")
    state = _run(ms, tasks, tvm_target, database, db_dir, todo, left_s, spent or 0.0, log)
    after = count_records(db_dir)
    info.update(records_after=after, trials_run=after - before, seconds=round(state.elapsed(), 1),
                tasks=len(tasks), tasks_tried=len(state.tried),
                best_latency_us=state.estimate_us([float(t.weight) for t in tasks]),
                interrupted=state.stop_reason == "interrupt", budget_spent=state.stop_reason == "budget")
    if state.stop_reason == "interrupt":
        raise _interrupted(db_dir, before, budget_s)
    log(f"[tune] done: {after - before} new trials in {info['seconds']:.0f} s; {after} records in {db_dir}")
    return database, info


def _plan(before: int, spent: float | None, trials: int | None,
          budget_s: float | None) -> tuple[int, float | None] | None:
    """(trials to run, budget left) for a database holding `before` records and `spent` seconds of
    tuning, or None when it already satisfies the request."""
    if trials is not None and before >= trials:
        return None
    left_s = None
    if budget_s is not None:
        if spent is None and before > 0 and trials is None:
            return None  # records without a tuning-time log (an older modelkit): treat the budget as spent
        left_s = budget_s - (spent or 0.0)
        if left_s < 1.0:
            return None
    return (trials - before if trials is not None else 1_000_000), left_s


def _run(ms: Any, tasks: list[Any], tvm_target: Any, database: Any, db_dir: Path, todo: int,
         budget_s: float | None, spent: float, log: Any) -> Any:
    """Run MetaSchedule with modelkit's scheduler, builder and progress; return the TuningState."""
    from . import builder, scheduler

    builder.preload_tensor_intrinsics()
    state = scheduler.TuningState(budget_s, log)
    # a bar on a terminal (the [tune] lines above it): over the trials, or the budget's seconds without a count
    by_trials = budget_s is None or todo < 1_000_000
    bar_total, label = (todo, "tuning (trials)") if by_trials else (round(budget_s), "tuning (s of budget)")

    def on_batch() -> None:
        save_spent(db_dir, spent + state.elapsed())
        bar.set(min(state.trials, todo) if by_trials else min(round(state.elapsed()), bar_total))

    state.on_batch = on_batch
    progress = scheduler.make_progress(ms, state, [t.task_name for t in tasks], [float(t.weight) for t in tasks])
    logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.WARNING)  # our own progress lines instead
    with steps(bar_total, label) as bar, tempfile.TemporaryDirectory(prefix="modelkit-tune-") as work_dir, \
            scheduler.sigint_stops(state):
        contexts, task_weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
            tasks, work_dir=work_dir, num_threads=_threads(tvm_target), seed=0,
            strategy=ms.search_strategy.EvolutionarySearch(population_size=64, init_min_unmeasured=16,
                                                           genetic_num_iters=2))
        build = builder.make_builder(ms, BUILD_TIMEOUT_S)
        try:
            ms.tune_tasks(tasks=contexts, task_weights=task_weights, work_dir=work_dir, max_trials_global=todo,
                          max_trials_per_task=todo, num_trials_per_iter=TRIALS_PER_ITER, builder=build,
                          runner=ms.runner.LocalRunner(timeout_sec=RUN_TIMEOUT_S),
                          database=database, cost_model=_cost_model(ms),
                          measure_callbacks=[*ms.measure_callback.MeasureCallback.create("default"), progress],
                          task_scheduler=scheduler.make_scheduler(ms, state))
        except BaseException as exc:  # a second Ctrl-C surfaces here, possibly wrapped by TVM's FFI
            if not (state.interrupts >= 2 or isinstance(exc, KeyboardInterrupt)):
                raise
            state.stop_reason = "interrupt"  # aborted mid-batch: the batches before it are committed
        finally:
            build.close()
    state.on_batch()
    return state


def spent_seconds(db_dir: Path) -> float | None:
    """Seconds of tuning already spent on the database (None when no modelkit run logged any)."""
    try:
        return float(json.loads((Path(db_dir) / STATUS).read_text())["seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save_spent(db_dir: Path, seconds: float) -> None:
    _atomic.write_text(Path(db_dir) / STATUS, json.dumps({"seconds": round(seconds, 1)}))


def _interrupted(db_dir: Path, before: int, budget_s: float | None) -> TuningInterrupted:
    after = count_records(db_dir)
    new = f"{after - before} new trials measured, "
    left = ""
    if budget_s is not None:
        left = f" ({max(0.0, budget_s - (spent_seconds(db_dir) or 0.0)):.0f} s of the budget left)"
    return TuningInterrupted(f"tuning interrupted: {new}{after} records kept in {db_dir}; run the same command "
                             f"again to resume from them{left}; no library was written")


def _threads(tvm_target: Any) -> int:
    cores = tvm_target.attrs.get("num-cores") if hasattr(tvm_target, "attrs") else None
    return int(cores) if cores else max(1, (os.cpu_count() or 1))


def _cost_model(ms: Any) -> Any:
    """XGBoost when installed (pip install --no-deps xgboost), else a random model (slower to converge)."""
    try:
        import xgboost  # noqa: F401
    except ImportError:
        return ms.cost_model.RandomModel()
    return "xgb"


def _stderr(msg: str) -> None:
    progress(msg)
