"""Measure built candidates side by side: one persistent worker process per candidate, interleaved rounds.

Each worker (modelkit._child.serve) loads its artifact once, with its own thread settings and engine imports,
computes accuracy (converters.gate) on the labelled data, and then times calls on request. Rounds visit the
workers in a seeded shuffled order, one worker at a time (the others wait idle, so they never compete for
cores); the drift of a noisy machine then falls on every candidate alike, and the spread between rounds is
reported.
The parent imports no framework.
"""
from __future__ import annotations

import os
import random
import sys
import time
from typing import Any, Callable

import numpy as np

from .. import _child, errors
from ..bench.worker import THREAD_ENV

LOAD_TIMEOUT_S = 300.0  # start, load, accuracy and warm-up of one worker
MIN_CALLS = 3  # per worker and round, even when round_seconds is spent
BOOTSTRAP_DRAWS = 2000
PROBE = "modelkit.optimization.measure:Probe"  # what each worker serves


def measure(candidates: list[dict], batch: int, data: str | None = None, rounds: int = 5,
            round_seconds: float = 0.3, deadline: float | None = None, warmup: int = 3, seed: int = 0,
            on_round: Callable[[int, int], None] | None = None) -> list[dict]:
    """Measure every "built" candidate and the "keras.predict" baseline row, filling their dicts in place.

    Each measured candidate gets: status "measured", p50_ms (median of the per-round median call times),
    p99_ms (99th percentile of all timed calls pooled), ci95_ms [lo, hi], rounds_ms (per-round medians),
    calls (timed calls in all), accuracy (converters.gate: top-1 or binary, on all of `data`'s rows when it has
    labels `y`, else None),
    load_s, batch, and worker (the worker's thread environment, engine, frameworks, inputs and labelled samples).
    ci95_ms is a 95 % percentile-bootstrap interval of p50_ms over both sources of noise: each draw resamples
    the rounds with replacement and redraws each drawn round's median from a resample of its own calls
    (exactly: the lower median of a resample of n sorted calls is call floor(n * Beta(m + 1, n - m)),
    m = (n - 1) // 2); BOOTSTRAP_DRAWS draws, seeded; widened to contain p50_ms should it fall outside.

    The timed input is the first `batch` rows of `data` (an .npz with the inputs by name or `x`), tiled when
    fewer; without data, the inputs modelkit bench generates. A round stops being started when `deadline`
    (a time.monotonic() value) would be passed by it (judged by the last round's length); one round always
    runs. A candidate whose worker fails to load, raises or dies gets status "failed" and a one-line reason;
    the others go on (a candidate that fails after loading keeps load_s, accuracy and worker). on_round(done,
    rounds) is called after each round. Returns `candidates`.
    """
    todo = [c for c in candidates if c.get("status") == "built"
            or (c.get("mode") == "keras.predict" and c.get("status") not in ("failed", "skipped"))]
    workers: dict[int, _child.Worker] = {}
    times: dict[int, list[list[float]]] = {}
    grace = 0.0  # interrupted or failed here: kill the workers at once
    try:
        for i, cand in enumerate(todo):  # one at a time, so load_s is the candidate's own
            workers[i] = _start(cand, batch, data, warmup, seed)
            try:
                workers[i].ready(LOAD_TIMEOUT_S)
                info = workers[i].call("info", timeout=LOAD_TIMEOUT_S)
            except errors.ModelkitError as exc:
                _fail(cand, exc)
                workers.pop(i).stop(grace=0)
                continue
            cand.update(load_s=info["load_s"], accuracy=info["accuracy"], worker=info["worker"])
            times[i] = []
        rng = random.Random(seed)
        last = 0.0
        rounds = max(1, rounds)
        for r in range(rounds):
            if r and deadline is not None and time.monotonic() + last > deadline:
                break
            t0 = time.monotonic()
            order = sorted(workers)
            rng.shuffle(order)
            for i in order:
                try:
                    times[i].append(workers[i].call("round", {"seconds": round_seconds},
                                                    timeout=round_seconds * 10 + 30))
                except errors.ModelkitError as exc:
                    _fail(todo[i], exc)
                    workers.pop(i).stop(grace=0)
                    times.pop(i)
            last = time.monotonic() - t0
            if on_round is not None:
                on_round(r + 1, rounds)
        grace = 2.0
    finally:
        for w in workers.values():
            w.stop(grace)
    for i in workers:
        todo[i].update(status="measured", reason=None, batch=batch, **stats(times[i], seed))
    return candidates


def stats(rounds_s: list[list[float]], seed: int = 0) -> dict[str, Any]:
    """The measurement figures (ms) from each round's call times (s): see measure()."""
    medians = [float(np.median(r)) * 1e3 for r in rounds_s]
    pooled = np.concatenate([np.asarray(r, dtype=np.float64) for r in rounds_s]) * 1e3
    p50 = float(np.median(medians))
    lo, hi = _bootstrap(rounds_s, seed)
    return {"p50_ms": p50, "p99_ms": float(np.percentile(pooled, 99)), "ci95_ms": [min(lo, p50), max(hi, p50)],
            "rounds_ms": medians, "calls": int(pooled.size)}


def _bootstrap(rounds_s: list[list[float]], seed: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    sorted_ms = [np.sort(np.asarray(r, dtype=np.float64)) * 1e3 for r in rounds_s]
    k = len(sorted_ms)
    picks = rng.integers(0, k, size=(BOOTSTRAP_DRAWS, k))
    meds = np.empty((BOOTSTRAP_DRAWS, k))
    for j, s in enumerate(sorted_ms):  # a redrawn median of round j for every draw, used where j was picked
        n, m = len(s), (len(s) - 1) // 2
        idx = np.minimum((rng.beta(m + 1, n - m, size=BOOTSTRAP_DRAWS) * n).astype(np.int64), n - 1)
        meds[:, j] = s[idx]
    draws = np.median(np.take_along_axis(meds, picks, axis=1), axis=1)
    return float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))


def _start(cand: dict, batch: int, data: str | None, warmup: int, seed: int) -> _child.Worker:
    threads = cand.get("threads")
    extra = {var: str(threads) for var in THREAD_ENV} if threads else {}
    kwargs = {"path": str(cand["path"]), "mode": cand.get("mode") or "run", "threads": threads, "batch": batch,
              "data": data, "warmup": warmup, "seed": seed, "backend": cand.get("backend")}
    return _child.serve(PROBE, kwargs, env=_child.child_env(cand.get("backend"), extra),
                        error=errors.WorkerError, what=f"measuring {cand.get('key', cand['path'])}",
                        fresh=True)  # its engine's imports and threads only, as a deployment has


def _fail(cand: dict, exc: BaseException) -> None:
    cand.update(status="failed", reason=errors.first_line(exc))


class Probe:
    """The worker side (in the child): one loaded artifact, its timed batch, and timed calls on request."""

    def __init__(self, path: str, mode: str, threads: int | None, batch: int, data: str | None, warmup: int,
                 seed: int, backend: str | None = None) -> None:
        from .. import manifest as _manifest
        from ..bench.worker import FRAMEWORKS, keras_predict, other_dim
        from ..converters.hop import reference_data
        from ..converters.verify import make_inputs
        from ..runtime import load

        t0 = time.perf_counter()
        model = load(path, threads=threads, **({"backend": backend} if backend else {}))
        self.load_s = time.perf_counter() - t0
        sig = model.signature
        self.accuracy: float | None = None
        samples = None
        if data:
            from ..converters.gate import accuracy
            from ..converters.quantize import load_npz

            inputs, labels = load_npz(data, sig, need_labels=False)
            label = f"{data} (first {batch} rows{', tiled' if min(map(len, inputs.values())) < batch else ''})"
            judge = _judge(model, inputs, labels)
            if judge is not None:  # a regressor's labels judge no accuracy
                samples = len(labels)
                self.accuracy = accuracy(model, inputs, labels, judge)[0]
            self.feed = make_inputs(sig, batch, None, seed, inputs)
        else:
            ref, ref_label = reference_data(_manifest.read(path), sig)
            label = ref_label or f"seeded uniform [0,1), seed {seed}"
            self.feed = make_inputs(sig, batch, other_dim(sig), seed, ref)
        self.fn = keras_predict(model) if mode == "keras.predict" else model.predict
        for _ in range(max(0, warmup)):
            self.fn(self.feed)
        self.worker = {"env": {v: os.environ.get(v) for v in THREAD_ENV}, "engine": model.engine,
                       "frameworks": sorted(f for f in FRAMEWORKS if f in sys.modules), "inputs": label,
                       "samples": samples, "pid": os.getpid()}

    def info(self) -> dict[str, Any]:
        return {"load_s": self.load_s, "accuracy": self.accuracy, "worker": self.worker}

    def round(self, seconds: float) -> list[float]:
        """Seconds per call of back-to-back calls for `seconds` of timed calls (at least MIN_CALLS)."""
        out: list[float] = []
        spent = 0.0
        while spent < seconds or len(out) < MIN_CALLS:
            t0 = time.perf_counter()
            self.fn(self.feed)
            out.append(time.perf_counter() - t0)
            spent += out[-1]
        return out


def _judge(model: Any, inputs: Any, labels: np.ndarray | None) -> Any:
    """The gate's Judge of `labels` on `model` (converters.gate.judge_on: of several outputs that fit, the one
    the labels describe best), or None without labels, one that fits, or a regressor's (optimize ranks by
    accuracy; a regressor's lossy builds are not measured)."""
    from ..converters.gate import MAE, judge_on

    if labels is None:
        return None
    try:
        j = judge_on(model, inputs, labels)[0]
    except errors.ModelkitError:
        return None
    return None if j.metric == MAE else j
