"""Prometheus text-format metrics (exposition format 0.0.4), without a client library.

Everything is updated from the event loop thread only, so no locks are needed.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable

LabelKey = tuple[str, ...]

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def _labels(names: tuple[str, ...], values: LabelKey, extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _escape(v: str) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(x: float) -> str:
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    return repr(float(x)) if not float(x).is_integer() else str(int(x))


class Counter:
    kind = "counter"

    def __init__(self, name: str, help: str, labels: tuple[str, ...] = ()):
        self.name, self.help, self.labelnames = name, help, labels
        self.values: dict[LabelKey, float] = {}

    def inc(self, *labels: str, by: float = 1.0) -> None:
        key = tuple(str(x) for x in labels)
        self.values[key] = self.values.get(key, 0.0) + by

    def get(self, *labels: str) -> float:
        return self.values.get(tuple(str(x) for x in labels), 0.0)

    def samples(self) -> Iterable[str]:
        for key, v in sorted(self.values.items()):
            yield f"{self.name}{_labels(self.labelnames, key)} {_num(v)}"


class Gauge:
    kind = "gauge"

    def __init__(self, name: str, help: str, labels: tuple[str, ...], collect: Callable[[], dict[LabelKey, float]]):
        self.name, self.help, self.labelnames, self.collect = name, help, labels, collect

    def samples(self) -> Iterable[str]:
        for key, v in sorted(self.collect().items()):
            yield f"{self.name}{_labels(self.labelnames, key)} {_num(v)}"


class Histogram:
    kind = "histogram"

    def __init__(self, name: str, help: str, buckets: tuple[float, ...], labels: tuple[str, ...] = ()):
        self.name, self.help, self.labelnames = name, help, labels
        self.buckets = tuple(sorted(buckets))
        self.data: dict[LabelKey, list[float]] = {}  # per label set: bucket counts..., +Inf count, sum

    def observe(self, value: float, *labels: str) -> None:
        key = tuple(str(x) for x in labels)
        row = self.data.setdefault(key, [0.0] * (len(self.buckets) + 2))
        for i, b in enumerate(self.buckets):
            if value <= b:
                row[i] += 1
        row[-2] += 1
        row[-1] += value

    def samples(self) -> Iterable[str]:
        for key, row in sorted(self.data.items()):
            for i, b in enumerate(self.buckets):
                le = 'le="' + _num(b) + '"'
                yield f"{self.name}_bucket{_labels(self.labelnames, key, le)} {_num(row[i])}"
            inf = 'le="+Inf"'
            yield f"{self.name}_bucket{_labels(self.labelnames, key, inf)} {_num(row[-2])}"
            yield f"{self.name}_sum{_labels(self.labelnames, key)} {_num(row[-1])}"
            yield f"{self.name}_count{_labels(self.labelnames, key)} {_num(row[-2])}"


class Metrics:
    """The server's metrics. Gauges read live state through callbacks set by the server."""

    def __init__(self) -> None:
        self.requests = Counter("modelkit_requests_total", "Inference requests by model, protocol and status code.",
                                ("model", "protocol", "code"))
        self.latency = Histogram("modelkit_request_duration_seconds", "Inference request latency.",
                                 LATENCY_BUCKETS, ("model", "protocol"))
        self.batch_size = Histogram("modelkit_batch_size", "Rows per engine call (after dynamic batching).",
                                    BATCH_BUCKETS, ("model", "version"))
        self.engine_calls = Counter("modelkit_engine_calls_total", "Engine calls (one per merged batch).",
                                    ("model", "version"))
        self.batched_requests = Counter("modelkit_batched_requests_total", "Requests served by engine calls.",
                                        ("model", "version"))
        self.load_failures = Counter("modelkit_model_load_failures_total", "Model versions that failed to load.",
                                     ("model", "version"))
        self.swaps = Counter("modelkit_model_swaps_total", "Times the default version of a model changed.",
                             ("model",))
        self.gauges: list[Gauge] = []

    def add_gauge(self, name: str, help: str, labels: tuple[str, ...],
                  collect: Callable[[], dict[LabelKey, float]]) -> None:
        self.gauges.append(Gauge(name, help, labels, collect))

    def render(self) -> str:
        out: list[str] = []
        for m in (self.requests, self.latency, self.batch_size, self.engine_calls, self.batched_requests,
                  self.load_failures, self.swaps, *self.gauges):
            out.append(f"# HELP {m.name} {m.help}")
            out.append(f"# TYPE {m.name} {m.kind}")
            out.extend(m.samples())
        return "\n".join(out) + "\n"


def parse(text: str) -> dict[str, float]:
    """Parse exposition text into {'name{labels}': value} (for tests and the benchmark)."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out
