"""A MetaSchedule task scheduler that honours a wall-clock budget and Ctrl-C between any two batches.

TVM's gradient scheduler first sends one batch of every task to the builder and runner and joins
them all only when that round is over, so nothing reaches the database, and no measure callback runs,
until every task has been tried once: a budget cannot stop that round and an interrupt inside it loses
every trial. This scheduler joins each batch before it picks the next, so records are committed after
every batch, and it checks the budget and the interrupt flag at every pick, so tuning ends within one
batch of either.

Picking: every task once first, heaviest (weight x FLOPs) first, so a short budget goes where the
work is; then the task with the largest share of the model's estimated latency (weight x best
latency), discounted by how many of its batches in a row brought no improvement.
"""
from __future__ import annotations

import contextlib
import time
from typing import Any, Callable, Iterator

from ... import _sigint


class TuningState:
    """What the scheduler and the progress callback share: clock, budget, stop reason, best latencies."""

    def __init__(self, budget_s: float | None, log: Callable[[str], None]) -> None:
        self.t0 = time.monotonic()
        self.budget_s = budget_s
        self.log = log
        self.stop_reason: str | None = None  # "budget" or "interrupt"
        self.interrupts = 0
        self.best: dict[int, float] = {}     # task -> best measured seconds
        self.stale: dict[int, int] = {}      # task -> batches in a row without improvement
        self.tried: set[int] = set()
        self.trials = 0
        self.on_batch: Callable[[], None] = lambda: None  # called after each measured batch
        self.baseline: dict[str, Any] = {}  # what timing the default schedules measured (baseline.py)


    def estimate_us(self, weights: list[float]) -> float | None:
        """The model's latency as the weighted sum of the best measured task latencies (tried tasks only)."""
        if not self.best:
            return None
        return round(sum(weights[i] * s for i, s in self.best.items()) * 1e6, 3)

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def should_stop(self) -> bool:
        if self.stop_reason is None and self.budget_s is not None and self.elapsed() >= self.budget_s:
            self.stop_reason = "budget"
            self.log(f"[tune] budget of {self.budget_s:.0f} s spent; stopping")
        return self.stop_reason is not None

    def record(self, task_id: int, seconds: list[float], n_trials: int) -> None:
        """Fold one measured batch of a task into the state."""
        self.trials += n_trials
        self.tried.add(task_id)
        best = min(seconds, default=float("inf"))
        if best < self.best.get(task_id, float("inf")):
            self.best[task_id] = best
            self.stale[task_id] = 0
        else:
            self.stale[task_id] = self.stale.get(task_id, 0) + 1

    def pick(self, live: list[int], weight: list[float], flop: list[float]) -> int:
        untried = [i for i in live if i not in self.tried]
        if untried:
            return max(untried, key=lambda i: (weight[i] * flop[i], -i))
        fallback = max(self.best.values(), default=1.0)  # a task with no valid run yet: as slow as the slowest

        def share(i: int) -> float:
            return weight[i] * self.best.get(i, fallback) / (1 + self.stale.get(i, 0))

        return max(live, key=lambda i: (share(i), -i))

    def on_sigint(self, signum: int, frame: Any) -> None:
        """First Ctrl-C: stop after the batch in flight. Second: abort now (committed records stay)."""
        self.interrupts += 1
        if self.interrupts == 1:
            self.stop_reason = "interrupt"
            self.log("[tune] Ctrl-C: stopping after the batch being measured (Ctrl-C again to abort now)")
            return
        raise KeyboardInterrupt


def make_scheduler(ms: Any, state: TuningState) -> Any:
    """A PyTaskScheduler that joins every batch before the next pick and stops when `state` says so."""
    from tvm.ir.utils import derived_object

    @derived_object
    class BudgetScheduler(ms.task_scheduler.PyTaskScheduler):
        def __init__(self) -> None:
            super().__init__()
            self.running: int | None = None

        def next_task_id(self) -> int:
            tasks = self._outer().tasks_
            if self.running is not None and not tasks[self.running].is_terminated:
                self.join_running_task(self.running)  # measure callbacks run: records are committed now
            self.running = None
            if state.should_stop():
                return -1
            live = [i for i, t in enumerate(tasks) if not t.is_terminated]
            if not live:
                return -1
            weight = [float(t.task_weight) for t in tasks]
            flop = [float(t.flop) for t in tasks]
            self.running = state.pick(live, weight, flop)
            return self.running

    return BudgetScheduler()


def make_progress(ms: Any, state: TuningState, names: list[str], weights: list[float]) -> Any:
    """A measure callback that folds each batch into `state` and prints one line per batch."""
    from tvm.ir.utils import derived_object

    @derived_object
    class Progress(ms.measure_callback.PyMeasureCallback):
        def apply(self, sched: Any, task_id: int, candidates: Any, builds: Any, runs: Any) -> None:
            secs = [sum(float(s) for s in r.run_secs) / len(r.run_secs) for r in runs
                    if r.error_msg is None and r.run_secs]
            state.record(task_id, secs, len(runs))
            state.on_batch()
            done = sum(1 for t in sched.tasks_ if t.is_terminated)
            best = f"{state.best[task_id] * 1e6:.3g} us" if task_id in state.best else "no valid run"
            state.log(f"[tune] {state.elapsed():6.0f} s  trials {state.trials:4d}  tasks tried "
                      f"{len(state.tried)}/{len(names)} done {done}  task {task_id} {names[task_id][:32]}: "
                      f"best {best}  model est. {state.estimate_us(weights)} us")

    return Progress()


@contextlib.contextmanager
def sigint_stops(state: TuningState) -> Iterator[None]:
    """While tuning, Ctrl-C asks the scheduler to stop instead of raising at once (modelkit._sigint.handling:
    main thread only; a SIGINT that the launcher ignored, as nohup does, stays ignored)."""
    with _sigint.handling(state.on_sigint):
        yield
