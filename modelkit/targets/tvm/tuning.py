"""MetaSchedule tuning with a trial count or a time budget, into a tuning database shared by all models.

One database per target and TVM version (`$MODELKIT_CACHE_DIR/tvm/db/<target key>/`, or
`~/.cache/modelkit/tvm/db/...`; tuning_db.py), keyed by workload: a task whose workload already has
enough records there (tuned for this model or any other) is taken from it and not tuned again, and the
compile's trials or budget go to the other tasks. Each model keeps a small ledger beside it
(`models/<model key>.json`: the trials and seconds its own runs spent), so trials and budget stay totals
per model: a second compile of the same model applies the records without tuning, and a larger request
tunes what is missing. The scheduler (scheduler.py) commits every batch of trials as soon as it is
measured, so an interrupted run (Ctrl-C, a budget running out) keeps the records so far and the next
compile resumes from them.
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
from . import baseline, rpc, tuning_db  # rpc imports no TVM: measuring on a device (--rpc)
from .tuning_db import RECORDS, WORKLOADS  # noqa: F401 - the database's two files, named here for callers

MODELS = "models"        # per-model ledgers: {"trials": n, "seconds": s} spent by that model's own runs
TRIALS_PER_ITER = 4      # small rounds: progress shows often and budgets stop close to their end
BUILD_TIMEOUT_S = 300.0  # generous: a loaded 2-core machine links candidates slowly
RUN_TIMEOUT_S = 120.0


def cache_root() -> Path:
    """Where tuning databases live: the user's cache folder (modelkit._cache), under tvm/."""
    from ..._cache import cache_root as user_cache

    return user_cache() / "tvm"


def database_dir(cache_dir: str | Path | None, tvm_target: dict[str, Any], tvm_version: str) -> Path:
    """The shared database of a target: CACHE/db/<target key>/ (CACHE: cache_dir, else cache_root())."""
    base = Path(cache_dir) if cache_dir else cache_root()
    return base / "db" / tuning_db.target_key(tvm_target, tvm_version)


def cache_key(model_sha256: str, tvm_target: dict[str, Any], batch: int, tvm_version: str) -> str:
    """Same model bytes + same target dict + same batch + same TVM -> same ledger (a model's own tuning)."""
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
         log: Any = None, *, model_key: str = "model", device: Any = None) -> tuple[Any, dict[str, Any]]:
    """Tune the prepared (fused) module's tasks into the shared database at db_dir; return (database, info).

    trials and budget_s are totals for this model (`model_key`'s ledger): a model whose own runs already
    measured `trials` records, or spent `budget_s`, is built from the database without tuning; otherwise
    what is missing is tuned, stopping within one batch once the budget is spent, on the tasks whose
    workload has fewer than `enough_records` valid records (the others come from the database, whichever
    model tuned them). Ctrl-C stops after the batch in flight (a second Ctrl-C at once) and raises
    TuningInterrupted; every batch measured before it is already in the database, and the next call resumes.
    """
    from tvm.s_tir import meta_schedule as ms

    log = log or _stderr
    db_dir = Path(db_dir)
    ledger = ledger_path(db_dir, model_key)
    own, spent = read_ledger(ledger)
    shared = tuning_db.open_shared(db_dir)
    database = shared.inner  # in memory: what the build applies
    tasks = ms.relax_integration.extract_tasks(mod, tvm_target)
    plan = _plan(own, spent, trials, budget_s)
    enough = enough_records(trials, len(tasks)) if plan is not None else 1
    from_db = [tuning_db.valid_records(database, t.dispatched[0], enough) >= enough for t in tasks]
    todo_tasks = [t for t, done in zip(tasks, from_db) if not done]
    info: dict[str, Any] = {"cache_dir": str(db_dir), "trials_requested": trials, "budget_s": budget_s,
                            "records_before": own, "trials_run": 0, "reused": False, "interrupted": False,
                            "tasks": len(tasks), "tasks_from_db": sum(from_db), "tasks_tuned": 0,
                            "database_records": len(database)}
    if not tasks:
        log("[tune] nothing to tune (no tunable operators)")
        info.update(records_after=own, seconds=0.0)
        return database, info
    if plan is None or not todo_tasks:
        why = "this model's tuning is done" if plan is None else f"all {len(tasks)} tasks are tuned there"
        log(f"[tune] {why}: {sum(from_db)} of {len(tasks)} tasks from the database {db_dir} (no new trials)")
        base = baseline.load(db_dir)
        info.update(reused=True, records_after=own, seconds=0.0,
                    tasks_default_faster=baseline.default_faster(tasks, database, base))
        return baseline.with_baseline(ms, database, base), info
    todo, left_s = plan
    if own:
        log(f"[tune] resuming after {own} trials" + (f" and {spent:.0f} s already spent" if spent else ""))
    log(f"[tune] {len(tasks)} tasks: {sum(from_db)} from the database (>= {enough} records), {len(todo_tasks)} "
        f"to tune; {todo if trials is not None else 'unlimited'} trials"
        f"{f', budget {left_s:.0f} s' if left_s else ''}; database {db_dir}")
    if device is not None:  # an rpc.Device: candidates run on the board the tracker holds under its key
        info["device"] = {"tracker": f"{device.host}:{device.port}", "key": device.key, **rpc.check(device)}
        log(f"[tune] measuring on {device}: latencies are that device's (under an emulator such as qemu they "
            "say nothing about speed)")
    state = _run(ms, todo_tasks, tvm_target, shared, ledger, todo, left_s, own, spent or 0.0, log, device,
                 all_tasks=tasks, db_dir=db_dir)
    info.update(records_after=own + state.trials, trials_run=state.trials, seconds=round(state.elapsed(), 1),
                tasks_tried=len(state.tried), tasks_tuned=len(state.tried), database_records=len(shared.inner),
                best_latency_us=state.estimate_us([float(t.weight) for t in todo_tasks]),
                interrupted=state.stop_reason == "interrupt", budget_spent=state.stop_reason == "budget")
    if state.stop_reason == "interrupt":
        raise _interrupted(db_dir, ledger, state.trials, budget_s)
    base = baseline.load(db_dir)
    info.update(baseline=state.baseline, tasks_default_faster=baseline.default_faster(tasks, shared.inner, base))
    kept = f"; the default schedule stays on {info['tasks_default_faster']} (faster than any tuned record)" \
        if info["tasks_default_faster"] else ""
    log(f"[tune] done: {state.trials} new trials on {len(state.tried)} tasks in {info['seconds']:.0f} s, "
        f"{sum(from_db)} tasks from the database{kept}; {count_records(db_dir)} records in {db_dir}")
    return baseline.with_baseline(ms, shared.inner, base), info


def enough_records(trials: int | None, n_tasks: int) -> int:
    """Valid records a task's workload needs in the database to be taken from it untuned: this request's
    share per task (trials / tasks, rounded up), or one batch when only a budget is given."""
    if trials is None or n_tasks <= 0:
        return TRIALS_PER_ITER
    return max(1, -(-int(trials) // n_tasks))


def _plan(before: int, spent: float | None, trials: int | None,
          budget_s: float | None) -> tuple[int, float | None] | None:
    """(trials to run, budget left) for a model whose own runs measured `before` trials in `spent`
    seconds, or None when that already satisfies the request."""
    if trials is not None and before >= trials:
        return None
    left_s = None
    if budget_s is not None:
        left_s = budget_s - (spent or 0.0)
        if left_s < 1.0:
            return None
    return (trials - before if trials is not None else 1_000_000), left_s


def _run(ms: Any, tasks: list[Any], tvm_target: Any, database: Any, ledger: Path, todo: int,
         budget_s: float | None, own: int, spent: float, log: Any, device: Any = None, *,
         all_tasks: list[Any], db_dir: Path) -> Any:
    """Time the default schedules (baseline.py), then run MetaSchedule with modelkit's scheduler, builder and
    progress; return the TuningState (its `baseline`: what timing the default schedules measured)."""
    from . import builder, scheduler

    builder.preload_tensor_intrinsics()
    state = scheduler.TuningState(budget_s, log)
    # a bar on a terminal (the [tune] lines above it): over the trials, or the budget's seconds without a count
    by_trials = budget_s is None or todo < 1_000_000
    bar_total, label = (todo, "tuning (trials)") if by_trials else (round(budget_s), "tuning (s of budget)")

    def on_batch() -> None:
        save_ledger(ledger, own + state.trials, spent + state.elapsed())
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
        build = builder.make_builder(ms, BUILD_TIMEOUT_S, None if device is None else (device.cxx, work_dir))
        watch = [] if device is None else [rpc.failure_watch(ms)]  # runs that failed on the device
        runner = _runner(ms, device)
        try:
            state.baseline = baseline.measure(ms, all_tasks, tvm_target, db_dir, build, runner, log,
                                              stop=state.should_stop)
            ms.tune_tasks(tasks=contexts, task_weights=task_weights, work_dir=work_dir, max_trials_global=todo,
                          max_trials_per_task=todo, num_trials_per_iter=TRIALS_PER_ITER, builder=build,
                          runner=runner,
                          database=database, cost_model=_cost_model(ms),
                          measure_callbacks=[*ms.measure_callback.MeasureCallback.create("default"), progress,
                                             *watch],
                          task_scheduler=scheduler.make_scheduler(ms, state))
        except BaseException as exc:  # a second Ctrl-C surfaces here, possibly wrapped by TVM's FFI
            if not (state.interrupts >= 2 or isinstance(exc, KeyboardInterrupt)):
                raise
            state.stop_reason = "interrupt"  # aborted mid-batch: the batches before it are committed
        finally:
            build.close()
    state.on_batch()
    if watch and state.stop_reason != "interrupt":
        rpc.raise_if_nothing_measured(watch[0], device)
    return state


def _runner(ms: Any, device: Any) -> Any:
    """Measure here, or on the device over TVM RPC (rpc.py)."""
    if device is None:  # its workers time candidates with the thread count the engine will run them with
        from ...runtime.tvm_host import use_threads

        use_threads()
        return ms.runner.LocalRunner(timeout_sec=RUN_TIMEOUT_S)
    return rpc.make_runner(ms, device)


def ledger_path(db_dir: Path, model_key: str) -> Path:
    """Where a model's ledger lives in the shared database folder."""
    return Path(db_dir) / MODELS / f"{model_key}.json"


def read_ledger(ledger: Path) -> tuple[int, float | None]:
    """(trials, seconds) that the model's own runs spent; (0, None) when none ran or the file is unreadable."""
    try:
        data = json.loads(Path(ledger).read_text())
        return int(data.get("trials", 0)), float(data["seconds"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return 0, None


def spent_seconds(ledger: Path) -> float | None:
    """Seconds of tuning the model's own runs spent (None when no modelkit run logged any)."""
    return read_ledger(ledger)[1]


def save_ledger(ledger: Path, trials: int, seconds: float) -> None:
    _atomic.write_text(Path(ledger), json.dumps({"trials": int(trials), "seconds": round(seconds, 1)}))


def _interrupted(db_dir: Path, ledger: Path, new: int, budget_s: float | None) -> TuningInterrupted:
    left = ""
    if budget_s is not None:
        left = f" ({max(0.0, budget_s - (spent_seconds(ledger) or 0.0)):.0f} s of the budget left)"
    return TuningInterrupted(f"tuning interrupted: {new} new trials measured, {count_records(db_dir)} records kept "
                             f"in {db_dir}; run the same command again to resume from them{left}; no library "
                             "was written")


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
