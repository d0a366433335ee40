"""Timing loops and their statistics: percentiles, spread and throughput from per-call latencies.

Pure Python + numpy, with the clock injectable so the statistics are testable against known timings.
"""
from __future__ import annotations

import re
import time
from typing import Any, Callable

import numpy as np

from ..errors import InputError

Clock = Callable[[], float]

# a run never stops before this many timed calls, even when --duration is already spent
MIN_ITERATIONS = 3


def parse_duration(value: str | float | int) -> float:
    """'10s', '500ms', '2m' or a bare number of seconds -> seconds (> 0)."""
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|min)?\s*", str(value).lower())
        if not m:
            raise InputError(f"bad duration '{value}'; use e.g. 10s, 500ms, 2m or a number of seconds")
        seconds = float(m.group(1)) * {"ms": 1e-3, "s": 1.0, "m": 60.0, "min": 60.0, None: 1.0}[m.group(2)]
    if not seconds > 0:
        raise InputError(f"duration must be > 0, got '{value}'")
    return seconds


def time_calls(fn: Callable[[], Any], *, iterations: int | None = None, duration: float | None = None,
               warmup: int = 0, clock: Clock = time.perf_counter) -> list[float]:
    """Call fn `warmup` times untimed, then time each call: exactly `iterations` calls, or calls until
    `duration` seconds of timed calls have passed (at least MIN_ITERATIONS). Returns seconds per call."""
    if (iterations is None) == (duration is None):
        raise InputError("give exactly one of iterations or duration")
    if iterations is not None and iterations < 1:
        raise InputError(f"iterations must be >= 1, got {iterations}")
    for _ in range(max(0, warmup)):
        fn()
    times: list[float] = []
    spent = 0.0
    while True:
        t0 = clock()
        fn()
        dt = clock() - t0
        times.append(dt)
        spent += dt
        if iterations is not None:
            if len(times) >= iterations:
                break
        elif spent >= duration and len(times) >= MIN_ITERATIONS:  # type: ignore[operator]
            break
    return times


def percentile(values: list[float] | np.ndarray, q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between closest ranks (numpy's default)."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        raise InputError("no timings to summarise")
    return float(np.percentile(arr, q))


def summarize(times_s: list[float], batch: int) -> dict[str, Any]:
    """Latency statistics in milliseconds and throughput in samples/s for calls of `batch` samples.

    throughput = batch * calls / total timed seconds (the mean rate, not 1/p50); spread is given as
    the interquartile range (p75 - p25) and the standard deviation (ddof 0).
    """
    arr = np.asarray(times_s, dtype=np.float64)
    if arr.size == 0:
        raise InputError("no timings to summarise")
    if batch < 1:
        raise InputError(f"batch must be >= 1, got {batch}")
    ms = arr * 1e3
    total = float(arr.sum())
    return {
        "iterations": int(arr.size),
        "latency_ms": {
            "p50": percentile(ms, 50), "p90": percentile(ms, 90), "p99": percentile(ms, 99),
            "mean": float(ms.mean()), "std": float(ms.std()), "iqr": percentile(ms, 75) - percentile(ms, 25),
            "min": float(ms.min()), "max": float(ms.max()),
        },
        "throughput_sps": batch * arr.size / total if total > 0 else None,
        "timed_s": total,
    }
