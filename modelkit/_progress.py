"""Progress of long work with a known number of steps: a bar on a terminal, plain lines elsewhere.

    with steps(total, "convert") as bar:
        ...
        bar.advance("[1/3] keras -> onnx: wrote cnn.onnx")  # a line, and one step done

When stderr is a terminal and progress is on, a rich bar on stderr shows the label, the bar, M/N, the time
elapsed and an ETA, and each message prints above it. Elsewhere (logs, pipes, tests, a child process whose
stderr is its parent's pipe) each message is the plain progress line it always was; quiet (`modelkit -q`,
MODELKIT_QUIET=1, `verbose=False` in the API) prints nothing. While a bar is live, every progress line of this
process (modelkit._text.progress) and every line its children print (modelkit._child relays them instead of
passing stderr through) prints through the bar's console, so nothing tears it. rich is imported only to draw.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
from types import SimpleNamespace
from typing import Any, Iterator

from ._text import QUIET_ENV

_live: Any = None  # the rich Progress drawn now in this process (one at a time; a nested steps() prints lines)


def quiet() -> bool:
    """Whether progress is off (`modelkit -q`, MODELKIT_QUIET=1, a `verbose=False` call)."""
    return os.environ.get(QUIET_ENV) == "1"


def live() -> bool:
    """Whether a bar is drawn now in this process (children started meanwhile are relayed through it)."""
    return _live is not None


def write(text: str) -> None:
    """Text for stderr (one or more whole lines, or a child's partial last line): above the live bar when there
    is one, else as it is."""
    progress = _live
    if progress is not None:
        progress.console.print(text.rstrip("\n"), markup=False, highlight=False, emoji=False, soft_wrap=True)
        return
    sys.stderr.write(text)
    sys.stderr.flush()


class Steps:
    """The handle steps() yields: `advance(message)` for a step done, `note(message)` for a line alone,
    `set(completed)` for an absolute count (seconds of a budget, trials measured)."""

    def __init__(self, mode: str, progress: Any = None, task: Any = None) -> None:
        self.mode = mode  # "bar", "lines" or "off"
        self.progress = progress
        self._task = task

    def note(self, message: str) -> None:
        if self.mode != "off":
            write(message + "\n")

    def advance(self, message: str | None = None, by: float = 1) -> None:
        if message:
            self.note(message)
        if self.progress is not None and by:
            self.progress.update(self._task, advance=by)

    def set(self, completed: float) -> None:
        if self.progress is not None:
            self.progress.update(self._task, completed=completed)


@contextlib.contextmanager
def steps(total: float | None, label: str, *, done: float = 0, bar: bool = True, show: bool = True,
          console: Any = None) -> Iterator[Steps]:
    """Progress over `total` steps (None: unknown), `done` of them already done (a resumed run).

    A bar when stderr (or `console`, a rich Console) is a terminal, `bar` is true and no bar is live already;
    else plain lines. Nothing at all when not `show` (the caller's own verbose flag) or quiet.
    """
    global _live
    if not show or quiet():
        yield Steps("off")
        return
    if not bar or _live is not None or not _terminal(console) or importlib.util.find_spec("rich") is None:
        yield Steps("lines")  # rich comes with the extras that do long work, not with the runtime-only ones
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        _eta_column(), console=console or Console(stderr=True), redirect_stdout=False,
                        redirect_stderr=True)  # stdout is for results; stray stderr prints go above the bar
    task = progress.add_task(label, total=total, completed=done, first=done)
    with progress:
        _live = progress
        try:
            yield Steps("bar", progress, task)
        finally:
            _live = None


@contextlib.contextmanager
def verbosity(verbose: bool) -> Iterator[None]:
    """`verbose=False` in the API: quiet for the call, in this process and the children it starts (as
    `modelkit -q`), restored afterwards. `verbose=True` leaves MODELKIT_QUIET as the user set it."""
    if verbose:
        yield
        return
    before = os.environ.get(QUIET_ENV)
    os.environ[QUIET_ENV] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(QUIET_ENV, None)
        else:
            os.environ[QUIET_ENV] = before


def _terminal(console: Any) -> bool:
    if console is not None:
        return bool(console.is_terminal) and not console.is_dumb_terminal
    try:
        tty = sys.stderr.isatty()
    except (AttributeError, OSError, ValueError):
        return False
    return tty and os.environ.get("TERM") != "dumb"


def eta(task: Any) -> float | None:
    """Seconds left at the run's average pace so far (None until a step is done, or with no total)."""
    if task.finished:
        return 0.0
    steps_done = task.completed - task.fields.get("first", 0)
    if task.total is None or steps_done <= 0 or not task.elapsed:
        return None
    return task.elapsed / steps_done * (task.total - task.completed)


def _eta_column() -> Any:
    """rich's TimeRemainingColumn fed the run's average pace: rich's own speed needs two steps within its last
    30 s, which steps minutes long (epochs, hops, trials) never give."""
    from rich.progress import TimeRemainingColumn

    class RunEta(TimeRemainingColumn):
        def render(self, task: Any) -> Any:
            return super().render(SimpleNamespace(total=task.total, finished=task.finished,
                                                  finished_time=task.finished_time, time_remaining=eta(task)))

    return RunEta()
