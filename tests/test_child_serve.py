"""modelkit._child.serve: a persistent child answering requests over a private pipe."""
from __future__ import annotations

import os
import sys
import time

import pytest

from modelkit import _child
from modelkit.errors import ShapeError, TrainingError, WorkerError

HERE = "tests.test_child_serve"


class Counter:
    """Served in the child: keeps state between calls and prints to stdout, as engines do."""

    def __init__(self, start: int) -> None:
        print('{"result": "chatter on stdout must not be taken for a reply"}', flush=True)
        self.n = start

    def add(self, k: int) -> dict:
        print(f"adding {k}", flush=True)
        self.n += k
        return {"n": self.n, "pid": os.getpid()}

    def shape(self) -> None:
        raise ShapeError("input 'x' expects (None, 4), got (2, 5)")

    def foreign(self) -> None:
        raise ZeroDivisionError("division by zero")

    def die(self, code: int) -> None:
        sys.stdout.flush()
        os._exit(code)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def refuse(reason: str) -> None:
    raise ShapeError(reason)


@pytest.fixture
def worker():
    w = _child.serve(f"{HERE}:Counter", {"start": 10}, what="the counter")
    yield w
    w.stop()


def test_a_served_object_keeps_its_state_across_calls_in_another_process(worker) -> None:
    worker.ready(timeout=60)
    first, second = worker.call("add", {"k": 1}, timeout=60), worker.call("add", {"k": 5}, timeout=60)
    assert (first["n"], second["n"]) == (11, 16) and first["pid"] == second["pid"] != os.getpid()
    worker.stop()
    assert worker.proc.returncode == 0 and not worker.alive()


def test_errors_come_back_typed_and_the_worker_keeps_serving(worker) -> None:
    with pytest.raises(ShapeError, match=r"expects \(None, 4\)") as info:
        worker.call("shape", timeout=60)
    assert "def shape" not in str(info.value) and "shape" in info.value.child_traceback
    with pytest.raises(WorkerError, match="^ZeroDivisionError: division by zero$"):
        worker.call("foreign", timeout=60)
    with pytest.raises(WorkerError, match="^AttributeError: _secret is private$"):
        worker.call("_secret", timeout=60)
    assert worker.call("add", {"k": 2}, timeout=60)["n"] == 12


def test_a_factory_that_raises_is_raised_by_ready() -> None:
    w = _child.serve(f"{HERE}:refuse", {"reason": "no such input 'y'"}, error=TrainingError)
    try:
        with pytest.raises(ShapeError, match="^no such input 'y'$"):
            w.ready(timeout=60)
    finally:
        w.stop()


def test_a_worker_that_dies_mid_call_is_the_callers_error_naming_it_and_the_exit_code(worker) -> None:
    with pytest.raises(WorkerError, match=r"^the counter died in its child process \(exit code 3\)"):
        worker.call("die", {"code": 3}, timeout=60)
    with pytest.raises(WorkerError, match="died in its child process"):  # and stays dead, without hanging
        worker.call("add", {"k": 1}, timeout=60)


def test_a_worker_that_does_not_answer_in_time_is_killed(worker) -> None:
    worker.ready(timeout=60)
    t0 = time.monotonic()
    with pytest.raises(WorkerError, match=r"^the counter did not answer within 1 s$"):
        worker.call("sleep", {"seconds": 120}, timeout=1)
    assert time.monotonic() - t0 < 30 and not worker.alive()


def test_child_output_is_relayed_apart_from_the_replies(monkeypatch) -> None:
    import io

    sink = io.StringIO()  # no file descriptor (CliRunner, notebooks): relayed line by line
    monkeypatch.setattr(sys, "stderr", sink)
    w = _child.serve(f"{HERE}:Counter", {"start": 0})
    try:
        assert w.call("add", {"k": 4}, timeout=60)["n"] == 4
    finally:
        w.stop()
    assert '{"result": "chatter on stdout must not be taken for a reply"}\nadding 4\n' in sink.getvalue()
