"""A process's first keras -> executorch conversion, with XNNPACK's pattern graphs built only where they can match
(modelkit.converters._xnnpack_passes) vs built always (ExecuTorch's own behaviour), side by side.

    .venv/bin/python benchmarks/bench_executorch_lowering.py [--rounds 3]

Each measurement is one verified conversion of a small CNN (two convolutions, a softmax head) in a new child of the
torch backend, so ExecuTorch's per-process pattern caches start empty, as in every `modelkit convert`. The rounds
interleave the two ways; medians and the ratio are printed.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.update({"TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "0", "PYTHONWARNINGS": "ignore"})

from modelkit import _child  # noqa: E402


def save_cnn(path: str) -> str:
    """In a child: a small digits-style CNN saved as .keras."""
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 1), name="image"),
                              keras.layers.Conv2D(16, 3, activation="relu", padding="same"),
                              keras.layers.Conv2D(32, 3, activation="relu"), keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(10, activation="softmax", name="probs")])
    model.save(path)
    return path


def convert(src: str, dest: str, all_patterns: bool) -> float:
    """In a child: seconds of one verified conversion; all_patterns: ExecuTorch's own passes, unchanged."""
    from modelkit.converters import _xnnpack_passes
    from modelkit.converters.hop import run_hop

    if all_patterns:
        _xnnpack_passes.patterns_only_where_they_can_match = contextlib.nullcontext
    t = time.perf_counter()
    summary = run_hop(src=src, dest=dest, source="keras", target="executorch")
    assert summary["parity"]["ok"], summary
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    times: dict[bool, list[float]] = {True: [], False: []}
    with tempfile.TemporaryDirectory(prefix="bench-et-") as td:
        src = str(Path(td) / "cnn.keras")
        _child.run("benchmarks.bench_executorch_lowering:save_cnn", {"path": src}, backend="torch", quiet=True)
        for r in range(args.rounds):
            for every in (True, False):
                dest = str(Path(td) / f"cnn{r}{every}.pte")
                times[every].append(_child.run("benchmarks.bench_executorch_lowering:convert",
                                               {"src": src, "dest": dest, "all_patterns": every}, backend="torch",
                                               quiet=True))
            print(f"round {r + 1}/{args.rounds} done", flush=True)
    every, matching = statistics.median(times[True]), statistics.median(times[False])
    print(f"\n{'first conversion in a process':<34}{'seconds':>9}")
    print(f"{'patterns built always':<34}{every:>8.2f}s")
    print(f"{'patterns only where they match':<34}{matching:>8.2f}s")
    print(f"{'ratio':<34}{every / matching:>8.2f}x")


if __name__ == "__main__":
    main()
