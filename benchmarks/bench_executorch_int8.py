"""ExecuTorch int8 against its float32 program on a Dense network (modelkit.converters._fx_linear), side by side.

    .venv/bin/python benchmarks/bench_executorch_int8.py [--rounds 7] [--out bench-out/executorch-int8]

A digits MLP (64-512-512-10, trained under TensorFlow) is converted to a float32 and an accuracy-gated int8 .pte by
`modelkit.convert`; both are loaded by `modelkit.load` in this process and called at batch 1 and 32, the rounds
interleaving the two. Medians, the int8 speed-up, the sizes and the test accuracy are printed. Before _fx_linear the
int8 file was the float one: Keras' Dense under torch is matmul + add, which XNNPACKQuantizer leaves float.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.update({"TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "0", "PYTHONWARNINGS": "ignore"})

import numpy as np  # noqa: E402


def prepare(folder: Path) -> dict[str, Path]:
    """The MLP, its float32 and int8 programs (cached in `folder`)."""
    import modelkit

    folder.mkdir(parents=True, exist_ok=True)
    src = folder / "mlp.keras"
    if not src.exists():
        from modelkit import _child

        _child.run("benchmarks.bench_executorch_int8:train", {"folder": str(folder)}, backend="tensorflow")
    arts = {"float32": folder / "mlp.pte", "int8": folder / "mlp.int8.pte"}
    if not arts["float32"].exists():
        modelkit.convert(src, "executorch", out_dir=folder, verbose=False)
    if not arts["int8"].exists():
        modelkit.convert(src, "executorch", out_dir=folder, quantize="int8", verbose=False,
                         calibration_data=str(folder / "calib.npz"), eval_data=str(folder / "test.npz"))
    return arts


def train(folder: str) -> None:
    """In a child: the digits MLP trained on 1400 digits; calibration and test .npz beside it."""
    import keras
    from sklearn.datasets import load_digits

    keras.utils.set_random_seed(0)
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    model = keras.Sequential([keras.Input((64,), name="pixels"), keras.layers.Dense(512, activation="relu"),
                              keras.layers.Dense(512, activation="relu"),
                              keras.layers.Dense(10, activation="softmax", name="digit")])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x[:1400], y[:1400], epochs=10, verbose=0)
    model.save(Path(folder) / "mlp.keras")
    np.savez(Path(folder) / "calib.npz", x=x[:200])
    np.savez(Path(folder) / "test.npz", x=x[1400:], y=y[1400:])


def measure(engines: dict[str, object], x: np.ndarray, rounds: int, calls: int) -> dict[str, float]:
    """Median microseconds per call of each engine over interleaved rounds."""
    times: dict[str, list[float]] = {k: [] for k in engines}
    for _ in range(rounds):
        for name, engine in engines.items():
            t = time.perf_counter()
            for _ in range(calls):
                engine.predict({"pixels": x})  # type: ignore[attr-defined]
            times[name].append((time.perf_counter() - t) / calls * 1e6)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--out", default=str(Path(os.environ.get("BENCH_OUT", "bench-out")) / "executorch-int8"))
    args = ap.parse_args()
    import modelkit

    arts = prepare(Path(args.out))
    engines = {k: modelkit.load(p) for k, p in arts.items()}
    test = np.load(Path(args.out) / "test.npz")
    for name, engine in engines.items():
        top1 = float((engine.predict({"pixels": test["x"]})["digit"].argmax(1) == test["y"]).mean())
        print(f"{name:8s} {arts[name].stat().st_size / 1024:8.1f} KB  test top-1 {top1:.4f}")
    rng = np.random.default_rng(0)
    for batch in (1, 32):
        x = rng.random((batch, 64), dtype=np.float32)
        med = measure(engines, x, args.rounds, calls=200)
        print(f"batch {batch:2d}: float32 {med['float32']:8.1f} us  int8 {med['int8']:8.1f} us  "
              f"int8 speed-up {med['float32'] / med['int8']:.2f}x")


if __name__ == "__main__":
    main()
