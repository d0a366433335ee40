"""Timing statistics against known latencies from a fake clock (no real time is measured here)."""
from __future__ import annotations

import math

import pytest

from modelkit.bench.stats import MIN_ITERATIONS, parse_duration, percentile, summarize, time_calls
from modelkit.errors import InputError


class FakeClock:
    """Each timed call takes the next latency from a list: the clock jumps by it between readings."""

    def __init__(self, latencies: list[float]):
        self.latencies = list(latencies)
        self.now = 100.0
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        if self.reads % 2 == 0:  # the reading after a call: the call took the next latency
            self.now += self.latencies.pop(0)
        return self.now


def test_time_calls_records_each_latency_and_skips_warmup() -> None:
    calls = []
    clock = FakeClock([0.001 * k for k in range(1, 11)])
    times = time_calls(lambda: calls.append(1), iterations=10, warmup=3, clock=clock)
    assert len(calls) == 13 and clock.reads == 20  # warmup calls are not timed
    assert times == pytest.approx([0.001 * k for k in range(1, 11)])


def test_summary_of_known_latencies() -> None:
    s = summarize([0.001 * k for k in range(1, 11)], batch=4)  # 1..10 ms
    lat = s["latency_ms"]
    assert s["iterations"] == 10
    assert lat["p50"] == pytest.approx(5.5)
    assert lat["p90"] == pytest.approx(9.1)
    assert lat["p99"] == pytest.approx(9.91)
    assert lat["iqr"] == pytest.approx(7.75 - 3.25)
    assert lat["std"] == pytest.approx(math.sqrt(8.25))
    assert (lat["min"], lat["max"], lat["mean"]) == pytest.approx((1.0, 10.0, 5.5))
    assert s["throughput_sps"] == pytest.approx(4 * 10 / 0.055)  # mean rate, not 1 / p50


def test_spread_is_zero_for_constant_latency_and_outlier_moves_p99_not_p50() -> None:
    flat = summarize([0.002] * 20, batch=1)["latency_ms"]
    assert flat["iqr"] == 0 and flat["std"] == 0 and flat["p50"] == pytest.approx(2.0)
    spiky = summarize([0.002] * 19 + [0.1], batch=1)["latency_ms"]
    assert spiky["p50"] == pytest.approx(2.0)
    assert spiky["p99"] == pytest.approx(2.0 + 0.81 * 98.0)  # 99th percentile interpolates into the spike
    assert spiky["iqr"] == 0


def test_duration_mode_stops_once_the_time_is_spent() -> None:
    clock = FakeClock([0.1] * 10)
    assert len(time_calls(lambda: None, duration=0.35, clock=clock)) == 4  # 0.4 s >= 0.35 s
    clock = FakeClock([0.5] * 10)
    assert len(time_calls(lambda: None, duration=0.01, clock=clock)) == MIN_ITERATIONS


def test_percentile_and_argument_errors() -> None:
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    with pytest.raises(InputError):
        percentile([], 50)
    with pytest.raises(InputError):
        time_calls(lambda: None, iterations=3, duration=1.0)
    with pytest.raises(InputError):
        summarize([0.1], batch=0)


@pytest.mark.parametrize("text, seconds", [("10s", 10.0), ("500ms", 0.5), ("2m", 120.0), ("1.5", 1.5), (3, 3.0)])
def test_parse_duration(text, seconds) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["fast", "0s", "-1s", "10h"])
def test_parse_duration_rejects(bad) -> None:
    with pytest.raises(InputError, match="duration"):
        parse_duration(bad)
