"""The default schedule as a measured baseline: a tuned record is applied only where it beats it.

A build applies, per task, the best record MetaSchedule measured. After a short tuning (tens of trials per
task, what a budget of minutes buys on a small machine) that best record can be slower than modelkit's
default schedule (default_schedule.py), and a tuned library would then be slower than an untuned one. So
before its first batch, tuning builds and times each task's default schedule with the same builder and runner
as the candidates (on the device, with --rpc) and keeps it as a record in a database of its own,
`<shared database>/baseline/`. Those records never count as tuning (trials, tasks taken from the database, the
evolutionary search's starting points); the build applies, per workload, the faster record of the two
databases (MetaSchedule's UnionDatabase), so a tuned task keeps the default schedule until tuning beats it.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from . import default_schedule, tuning_db

FOLDER = "baseline"


def folder(db_dir: Path) -> Path:
    return Path(db_dir) / FOLDER


def measure(ms: Any, tasks: list[Any], tvm_target: Any, db_dir: Path, builder: Any, runner: Any,
            log: Callable[[str], None], stop: Callable[[], bool] = lambda: False, chunk: int = 4) -> dict[str, Any]:
    """Time the default schedule of each task that has no baseline record yet, `chunk` tasks at a time (stop()
    is asked between chunks: a budget spent, a Ctrl-C), and keep the ones that ran.
    Returns {"measured": n, "failed": n, "seconds": s}."""
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo

    t0 = time.monotonic()
    base = tuning_db.open_shared(folder(db_dir))
    todo = []
    for task in tasks:
        mod = task.dispatched[0]
        if tuning_db.valid_records(base.inner, mod, 1):
            continue
        try:
            sch = default_schedule.traced(mod, tvm_target)
        except Exception:  # noqa: BLE001 - a rule that fails on a task leaves it without a baseline
            sch = None
        if sch is not None:
            todo.append((mod, sch, ArgInfo.from_prim_func(sch.mod["main"])))
    info = {"measured": 0, "failed": 0, "seconds": 0.0}
    if not todo:
        return info
    log(f"[tune] timing the default schedule of {len(todo)} tasks: the baseline a tuned record must beat")
    tried = 0
    for start in range(0, len(todo), chunk):
        if stop():
            break
        jobs = todo[start:start + chunk]
        tried += len(jobs)
        info["measured"] += _measure_chunk(ms, jobs, tvm_target, base, builder, runner)
    info.update(failed=tried - info["measured"], seconds=round(time.monotonic() - t0, 1))
    return info


def _measure_chunk(ms: Any, jobs: list[tuple[Any, Any, Any]], tvm_target: Any, base: Any, builder: Any,
                   runner: Any) -> int:
    built = builder.build([ms.builder.BuilderInput(sch.mod, tvm_target) for _, sch, _ in jobs])
    ran, inputs = [], []
    for job, result in zip(jobs, built):
        if result.error_msg is None:
            ran.append(job)
            inputs.append(ms.runner.RunnerInput(result.artifact_path, device_type=_device_type(tvm_target),
                                                args_info=job[2]))
    kept = 0
    for (mod, sch, args), future in zip(ran, runner.run(inputs)):
        result = future.result()
        if result.error_msg is not None or not result.run_secs:
            continue
        base.commit_tuning_record(ms.database.TuningRecord(sch.trace, base.commit_workload(mod),
                                                           run_secs=result.run_secs, target=tvm_target,
                                                           args_info=args))
        kept += 1
    return kept


def _device_type(tvm_target: Any) -> str:
    """The runner's device name for a target kind, as MetaSchedule's own scheduler passes it (llvm: cpu)."""
    kind = tvm_target.kind.name
    return "cpu" if kind == "llvm" else kind


def load(db_dir: Path) -> Any:
    """The baseline database beside the shared one at db_dir (in memory), or None when none was measured."""
    path = folder(db_dir)
    return tuning_db.open_shared(path).inner if (path / tuning_db.RECORDS).is_file() else None


def with_baseline(ms: Any, database: Any, base: Any) -> Any:
    """The database a build applies: per workload the faster of its best record and the baseline's."""
    return database if base is None else ms.database.UnionDatabase(database, base)


def default_faster(tasks: list[Any], database: Any, base: Any) -> int:
    """How many tasks the baseline wins: tasks whose default schedule is faster than every tuned record."""
    if base is None:
        return 0
    won = 0
    for task in tasks:
        mod = task.dispatched[0]
        tuned, default = _best_s(database, mod), _best_s(base, mod)
        won += tuned is not None and default is not None and default < tuned
    return won


def _best_s(db: Any, mod: Any) -> float | None:
    if not db.has_workload(mod):
        return None
    top = db.get_top_k(db.commit_workload(mod), 1)
    if not top:
        return None
    secs = [float(s) for s in top[0].run_secs]
    return sum(secs) / len(secs)
