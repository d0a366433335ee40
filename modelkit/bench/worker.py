"""The child-process side of a benchmark: load one artifact, time it at every batch size, report.

Runs via modelkit._child in a fresh Python process per artifact, so thread pools, environment and
imported frameworks of one engine never leak into another's numbers, and peak RSS is the engine's own.
"""
from __future__ import annotations

import os
import resource
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .._text import progress
from .stats import summarize, time_calls

MODES = ("run", "keras.predict")
FRAMEWORKS = ("tensorflow", "torch", "jax", "keras", "onnxruntime", "tvm", "ai_edge_litert", "openvino")
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TF_NUM_INTRAOP_THREADS")
SEED = 0
OTHER_DIM = 16  # size of dynamic non-batch dimensions in generated inputs


def peak_rss_bytes() -> int:
    """This process's peak resident set size so far.

    Reads VmHWM, the high-water mark of this process's own address space: ru_maxrss is not enough, since
    Linux carries the parent's size into a child that was forked then exec'd (a child of a 1.4 GB test
    process would report 1.4 GB whatever its engine used).
    """
    from ..safety.limits import proc_kib

    hwm = proc_kib("/proc/self/status", "VmHWM:")
    return hwm if hwm is not None else int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # KiB


def measure(artifact: str, mode: str, batches: list[int], threads: int | None, device: str,
            iterations: int | None, duration: float | None, warmup: int, label: str,
            index: int, total: int, backend: str | None = None, seed: int = SEED) -> dict[str, Any]:
    """Benchmark one artifact in this (child) process; progress lines go to stderr."""
    if threads:  # before any engine is imported, so native thread pools start with this size
        for var in THREAD_ENV:
            os.environ[var] = str(threads)
    rss_start = peak_rss_bytes()
    from .. import manifest as _manifest
    from ..converters.hop import reference_data
    from ..converters.verify import make_inputs
    from ..runtime import load

    path = Path(artifact)
    t0 = time.perf_counter()
    model = load(path, device=device, threads=threads, **({"backend": backend} if backend else {}))
    load_s = time.perf_counter() - t0
    data, data_label = reference_data(_manifest.read(path), model.signature)
    call = keras_predict(model) if mode == "keras.predict" else model.predict
    batches = _takes(model.signature, batches, label)
    results = []
    for i, batch in enumerate(batches):
        feed = make_inputs(model.signature, batch, other_dim(model.signature), seed, data)
        t0 = time.perf_counter()
        call(feed)
        first_s = time.perf_counter() - t0
        times = time_calls(lambda feed=feed: call(feed), iterations=iterations, duration=duration, warmup=warmup)
        row = {"batch": batch, "first_call_s": first_s, **summarize(times, batch), "peak_rss_bytes": peak_rss_bytes()}
        results.append(row)
        lat = row["latency_ms"]
        progress(f"[{index + i}/{total}] {label} b={batch} ... p50 {lat['p50']:.3g} ms, p99 {lat['p99']:.3g} ms, "
                 f"{row['throughput_sps']:.4g} samples/s")
    return {"load_s": load_s, "engine": model.engine, "rss_start_bytes": rss_start, "batches": results,
            "inputs": data_label or f"seeded uniform [0,1), seed {seed}", "pid": os.getpid(),
            "frameworks": sorted(f for f in FRAMEWORKS if f in sys.modules),
            "env": {v: os.environ.get(v) for v in THREAD_ENV}}


def _takes(sig: Any, batches: list[int], label: str) -> list[int]:
    """The batches this artifact can really run: a signature that fixes the batch (a tuned TVM library, a
    fixed-shape export) runs that batch only; the others are skipped, saying so, never faked by feeding
    the fixed batch and counting the requested one."""
    fixed = {spec.shape[0] for spec in sig.inputs if spec.shape}
    if len(fixed) != 1 or None in fixed:
        return batches
    (size,) = fixed
    kept = [b for b in batches if b == size] or [size]
    skipped = [b for b in batches if b != size]
    if skipped:
        print(f"[bench] {label}: its signature fixes the batch at {size}; measuring b={size} only (skipped "
              f"b={','.join(map(str, skipped))})", file=sys.stderr, flush=True)
    return kept


def other_dim(sig: Any) -> int | None:
    """The size generated inputs give a dynamic non-batch dimension (None when the model has none)."""
    return OTHER_DIM if any(d is None for s in sig.inputs for d in s.shape[1:]) else None


def keras_predict(model: Any) -> Callable[[dict[str, np.ndarray]], Any]:
    """Keras' own `model.predict` (the baseline most users start from), fed like the direct call."""
    keras_model = model.model
    sig = model.signature
    by_name = isinstance(getattr(keras_model, "_inputs_struct", None), dict)

    def predict(feed: dict[str, np.ndarray]) -> Any:
        args = [feed[n] for n in sig.input_names]
        x: Any = dict(feed) if by_name else (args if len(args) > 1 else args[0])
        return keras_model.predict(x, batch_size=len(args[0]), verbose=0)

    return predict
