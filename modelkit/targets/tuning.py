"""MetaSchedule tuning with a trial count or a time budget, and a persistent tuning database.

The database lives in a cache folder keyed by the model and the target
(`$MODELKIT_CACHE_DIR/tvm/<key>/` or `~/.cache/modelkit/tvm/<key>/`), so a second compile of the same
model for the same target applies it without tuning again. MetaSchedule appends every measured
trial to the database as it goes, so an interrupted tuning run (Ctrl-C, a budget running out) keeps
the records so far and the next compile resumes from them.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ..errors import ConversionError

WORKLOADS = "database_workload.json"
RECORDS = "database_tuning_record.json"
TRIALS_PER_ITER = 4      # small rounds: progress shows often and budgets stop close to their end
BUILD_TIMEOUT_S = 300.0  # generous: a loaded 2-core machine links candidates slowly
RUN_TIMEOUT_S = 120.0


def cache_root() -> Path:
    base = os.environ.get("MODELKIT_CACHE_DIR")
    root = Path(base) if base else Path(os.path.expanduser("~")) / ".cache" / "modelkit"
    return root / "tvm"


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

    The database is reused without tuning when it already holds at least `trials` records (or any
    records when only a budget is given). Otherwise tuning runs the missing trials, stopping early
    when the budget is spent. The budget is checked as measured rounds come back; MetaSchedule's first
    round (one batch of candidates for every task) always completes, so a small budget on a model with
    many tasks overshoots by that round.
    """
    from tvm.s_tir import meta_schedule as ms

    log = log or _stderr
    db_dir = Path(db_dir)
    db_dir.mkdir(parents=True, exist_ok=True)
    before = count_records(db_dir)
    info: dict[str, Any] = {"cache_dir": str(db_dir), "trials_requested": trials, "budget_s": budget_s,
                            "records_before": before, "trials_run": 0, "reused": False, "interrupted": False}
    database = ms.database.JSONDatabase(path_workload=str(db_dir / WORKLOADS),
                                        path_tuning_record=str(db_dir / RECORDS))
    if before > 0 and (trials is None or before >= trials):
        log(f"[tune] reusing {before} tuning records from {db_dir} (no new trials)")
        info.update(reused=True, records_after=before, seconds=0.0)
        return database, info
    tasks = ms.relax_integration.extract_tasks(mod, tvm_target)
    if not tasks:
        log("[tune] nothing to tune (no tunable operators)")
        info.update(records_after=before, seconds=0.0, tasks=0)
        return database, info
    todo = (trials - before) if trials is not None else 1_000_000  # budget-only: run until it is spent
    progress = _progress_callback(ms, [t.task_name for t in tasks], [float(t.weight) for t in tasks],
                                  budget_s, log)
    logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.WARNING)  # our own progress lines instead
    t0 = time.monotonic()
    log(f"[tune] {len(tasks)} tasks, {todo if trials is not None else 'unlimited'} trials"
        f"{f', budget {budget_s:.0f} s' if budget_s else ''}; database {db_dir}")
    with tempfile.TemporaryDirectory(prefix="modelkit-tune-") as work_dir:  # MetaSchedule's bulky logs
        contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
            tasks, work_dir=work_dir, num_threads=_threads(tvm_target), seed=0,
            strategy=ms.search_strategy.EvolutionarySearch(population_size=64, init_min_unmeasured=16,
                                                           genetic_num_iters=2))
        ms.tune_tasks(tasks=contexts, task_weights=weights, work_dir=work_dir, max_trials_global=todo,
                      max_trials_per_task=todo, num_trials_per_iter=TRIALS_PER_ITER,
                      builder=ms.builder.LocalBuilder(timeout_sec=BUILD_TIMEOUT_S, max_workers=1),
                      runner=ms.runner.LocalRunner(timeout_sec=RUN_TIMEOUT_S),
                      database=database, cost_model=_cost_model(ms),
                      measure_callbacks=[*ms.measure_callback.MeasureCallback.create("default"), progress])
    after = count_records(db_dir)
    py = progress._inst if hasattr(progress, "_inst") else progress
    info.update(records_after=after, trials_run=after - before, seconds=round(time.monotonic() - t0, 1),
                tasks=len(tasks), best_latency_us=py.estimate_us(), interrupted=py.interrupted,
                budget_spent=py.budget_spent)
    if py.interrupted:
        log(f"[tune] interrupted: {after} records kept in {db_dir}; the next compile resumes from them")
        raise KeyboardInterrupt
    log(f"[tune] done: {after - before} new trials in {info['seconds']:.0f} s; {after} records in {db_dir}")
    return database, info


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
    print(msg, file=sys.stderr, flush=True)


def _progress_callback(ms: Any, names: list[str], weights: list[float], budget_s: float | None, log: Any) -> Any:
    from tvm.ir.utils import derived_object

    @derived_object
    class Progress(ms.measure_callback.PyMeasureCallback):
        """Prints one line per measured round; ends tuning when the budget is spent or on Ctrl-C."""

        def __init__(self) -> None:
            self.t0 = time.monotonic()
            self.best: dict[int, float] = {}
            self.trials = 0
            self.interrupted = False
            self.budget_spent = False

        def estimate_us(self) -> float | None:
            if not self.best:
                return None
            return round(sum(weights[i] * s for i, s in self.best.items()) * 1e6, 3)

        def apply(self, sched: Any, task_id: int, candidates: Any, builds: Any, runs: Any) -> None:
            try:
                self.trials += len(runs)
                secs = [sum(float(s) for s in r.run_secs) / len(r.run_secs) for r in runs
                        if r.error_msg is None and r.run_secs]
                if secs:
                    self.best[task_id] = min(min(secs), self.best.get(task_id, float("inf")))
                done = sum(1 for t in sched.tasks_ if t.is_terminated)
                elapsed = time.monotonic() - self.t0
                best = f"{self.best[task_id] * 1e6:.3g} us" if task_id in self.best else "no valid run"
                log(f"[tune] {elapsed:6.0f} s  trials {self.trials:4d}  tasks done {done}/{len(names)}  "
                    f"task {task_id} {names[task_id][:32]}: best {best}  model est. {self.estimate_us()} us")
                if budget_s is not None and elapsed >= budget_s and not self.budget_spent:
                    self.budget_spent = True
                    log(f"[tune] budget of {budget_s:.0f} s spent; stopping")
                    self._stop(sched)
            except KeyboardInterrupt:
                self.interrupted = True
                self._stop(sched)

        @staticmethod
        def _stop(sched: Any) -> None:
            for i, t in enumerate(sched.tasks_):
                if not t.is_terminated:
                    sched.terminate_task(i)

    return Progress()
