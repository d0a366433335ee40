"""The tuning scheduler's choices and stop rules, without TVM: plain state in, task ids out."""
import signal

import pytest

from modelkit.targets.tvm.scheduler import TuningState, sigint_stops


def state(budget=None):
    lines = []
    return TuningState(budget, lines.append), lines


def test_every_task_is_tried_once_first_heaviest_first():
    s, _ = state()
    weight, flop = [1.0, 2.0, 1.0], [100.0, 100.0, 500.0]
    assert s.pick([0, 1, 2], weight, flop) == 2          # 1 x 500
    s.record(2, [1e-5], 4)
    assert s.pick([0, 1, 2], weight, flop) == 1          # 2 x 100 beats 1 x 100
    s.record(1, [1e-5], 4)
    assert s.pick([0, 1, 2], weight, flop) == 0


def test_then_the_largest_share_of_latency_discounted_by_stagnation():
    s, _ = state()
    weight, flop = [1.0, 1.5], [1.0, 1.0]
    s.record(0, [40e-6], 4)
    s.record(1, [10e-6], 4)
    assert s.pick([0, 1], weight, flop) == 0             # 40 us x 1 > 10 us x 1.5
    s.record(0, [50e-6], 4)                              # no improvement: 40 / 2 = 20 > 15
    assert s.pick([0, 1], weight, flop) == 0
    s.record(0, [45e-6], 4)                              # twice stale: 40 / 3 = 13.3 < 15
    assert s.pick([0, 1], weight, flop) == 1
    assert s.pick([0], weight, flop) == 0                # only live tasks are picked
    assert s.best == {0: 40e-6, 1: 10e-6} and s.trials == 16


def test_a_task_without_a_valid_run_counts_as_the_slowest():
    s, _ = state()
    s.record(0, [20e-6], 4)
    s.record(1, [], 4)                                   # every candidate failed
    assert 1 not in s.best and s.pick([0, 1], [1.0, 1.0], [1.0, 1.0]) == 0  # stale: 20 / 2 < 20


def test_the_budget_stops_at_the_next_pick(monkeypatch):
    s, lines = state(budget=10.0)
    assert not s.should_stop()
    monkeypatch.setattr(s, "elapsed", lambda: 10.5)
    assert s.should_stop() and s.stop_reason == "budget"
    assert lines == ["[tune] budget of 10 s spent; stopping"]


def test_first_ctrl_c_asks_to_stop_and_the_second_aborts():
    s, lines = state()
    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
    try:
        with sigint_stops(s):
            assert signal.getsignal(signal.SIGINT) == s.on_sigint
            signal.raise_signal(signal.SIGINT)
            assert s.stop_reason == "interrupt" and s.should_stop()
            assert "Ctrl-C again to abort now" in lines[-1]
            with pytest.raises(KeyboardInterrupt):
                signal.raise_signal(signal.SIGINT)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, before)


def test_an_ignored_sigint_stays_ignored():
    """Started with nohup or as a background job: tuning does not make itself interruptible."""
    s, _ = state()
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with sigint_stops(s):
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)
