"""What a child process costs: a new Python vs a fork of a warm server (modelkit._forkserver), side by side.

    .venv/bin/python benchmarks/bench_child_start.py [--rounds 5]

Two kinds of work, each run in a child through modelkit._child.run, in interleaved rounds (a new Python, then a
forked child, then the next round): an empty call under the tensorflow backend (the start alone), and a verified
keras -> onnx conversion of a small dense model (what `modelkit convert` runs per backend). Medians of the rounds
and the ratio new / forked are printed. The server is started before the first round (its start is the price of
one new Python, paid at an environment's second child) and its start time is printed too.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.update({"TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "0", "PYTHONWARNINGS": "ignore"})

from modelkit import _child, _forkserver  # noqa: E402


def save_dense(path: str) -> str:
    """In a child: a small dense classifier saved as .keras."""
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64,), name="pixels"), keras.layers.Dense(32, activation="relu"),
                              keras.layers.Dense(10, activation="softmax", name="probs")])
    model.save(path)
    return path


def _model(folder: Path) -> Path:
    path = folder / "dense.keras"
    _child.run("benchmarks.bench_child_start:save_dense", {"path": str(path)}, backend="tensorflow", fresh=True)
    return path


def _convert(src: Path, dest: Path, fresh: bool) -> None:
    hop = {"src": str(src), "dest": str(dest), "source": "keras", "target": "onnx", "routes": ["tf2onnx"],
           "tried": [], "last": True, "index": 1, "options": {}, "verify": True, "force": True,
           "trust_unsafe_code": False, "atol": None, "total": 1}
    got = _child.run("modelkit.converters.hop:run_hops", {"hops": [hop], "keep_going": False}, backend="tensorflow",
                     quiet=True, fresh=fresh)
    assert got[0]["parity"]["ok"], got


def _empty(fresh: bool) -> None:
    _child.run("os:getpid", {}, backend="tensorflow", quiet=True, fresh=fresh)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-child-") as td:
        folder = Path(td)
        src = _model(folder)
        t0 = time.perf_counter()
        for _ in range(2):  # an environment's second child starts its server
            _empty(fresh=False)
        print(f"first child + server start: {time.perf_counter() - t0:.1f} s", flush=True)
        assert _forkserver._servers, "no fork server started (MODELKIT_FORK_SERVER=0?)"
        times: dict[str, list[float]] = {k: [] for k in ("empty new", "empty forked", "convert new", "convert forked")}
        for r in range(args.rounds):
            for fresh in (True, False):
                label = "new" if fresh else "forked"
                t = time.perf_counter()
                _empty(fresh)
                times[f"empty {label}"].append(time.perf_counter() - t)
                t = time.perf_counter()
                _convert(src, folder / f"out{r}{label}.onnx", fresh)
                times[f"convert {label}"].append(time.perf_counter() - t)
            print(f"round {r + 1}/{args.rounds} done", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\n{'work':<26}{'new Python':>12}{'forked':>10}{'ratio':>8}")
    for work in ("empty", "convert"):
        new, forked = med[f"{work} new"], med[f"{work} forked"]
        name = "empty call (tensorflow)" if work == "empty" else "keras -> onnx, verified"
        print(f"{name:<26}{new:>11.2f}s{forked:>9.2f}s{new / forked:>7.1f}x")


if __name__ == "__main__":
    main()
