"""`make demo`: train the CNN on digits, convert it to every installed format with parity checks,
run each artifact through modelkit.load, and print one table from real runs."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def bench_engine(bench: dict, key: str) -> str:
    return next((r["engine"] for r in bench["rows"] if str(Path(r["artifact"]).resolve()) == key
                 and r["mode"] == "run"), "?")


def accuracy(model, inputs: dict[str, np.ndarray], labels: np.ndarray) -> tuple[float, np.ndarray]:
    out = model.predict(inputs)
    probs = out["probs"] if "probs" in out else next(iter(out.values()))
    pred = probs.argmax(-1)
    return float((pred == labels).mean()), pred


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="demo-out")
    ap.add_argument("--model", default="cnn")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--backend", default="tensorflow", choices=["tensorflow", "torch", "jax"])
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--tune", action="store_true", help="pick hyperparameters with a short search first")
    ap.add_argument("--trials", type=int, default=4, help="search trials with --tune")
    args = ap.parse_args()

    import modelkit
    from modelkit._text import human_size, table
    from modelkit.core.data import test_split
    from modelkit.core.train import train
    from modelkit.manifest import read as read_manifest

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    src = out / f"{args.model}.keras"
    search = {}
    if args.tune:  # a short KerasTuner search; the best trial's model is what gets converted
        search = {"search": {"learning_rate": {"min": 1e-3, "max": 3e-2, "log": True}, "units": [16, 32],
                             "dropout": [0.0, 0.2]}, "tune": True, "trials": args.trials,
                  "study_dir": str(out / "study"), "epochs": max(3, args.epochs // 2)}
    print(f"== 1. {'search and ' if args.tune else ''}train {args.model} on digits ({args.backend} backend)",
          flush=True)
    summary = train(**{"model": args.model, "data": "digits", "epochs": args.epochs, "backend": args.backend,
                       "out": str(src), "force": True, "verbose": True, **search})
    print(f"   test accuracy {summary['test_accuracy']:.4f} -> {src}")

    print("== 2. convert to every installed format + int8 TFLite (each hop verified on the digits test split)",
          flush=True)
    results = modelkit.convert(src, "all", out_dir=out, force=True)
    results += modelkit.convert(src, "tflite", out_dir=out, force=True, options={"quantize": "int8"})

    print("== 3. load every artifact with modelkit.load: accuracy here, latency in one child process each",
          flush=True)
    from modelkit.bench import run_bench

    inputs, labels = test_split("digits", args.model, seed=0)
    fp32_size = {r.format: r.size_bytes for r in results if not r.quantization or r.quantization == "none"}
    artifacts = [("keras", str(src), None, None)]
    artifacts += [(r.format + (f" {r.quantization}" if r.quantization not in (None, "none") else ""), r.path,
                   r.parity, r.size_bytes / fp32_size[r.format] if r.format in fp32_size else None)
                  for r in results]
    bench = run_bench([path for _f, path, _p, _r in artifacts], batches=(1, 32), iterations=args.repeats,
                      duration=None, warmup=5)
    p50 = {(str(Path(r["artifact"]).resolve()), r["mode"], r["batch"]): r["latency_ms"]["p50"] for r in bench["rows"]}
    predict_b1 = p50.get((str(src.resolve()), "keras.predict", 1))
    reference = keras_acc = None
    rows = []
    for fmt, path, parity, size_ratio in artifacts:
        model = modelkit.load(path)
        acc, pred = accuracy(model, inputs, labels)
        del model
        if reference is None:
            reference, keras_acc = pred, acc
        agree = float((pred == reference).mean())
        max_abs = "-" if parity is None else f"{max(o['max_abs'] for o in parity['outputs']):.1e}"
        size = read_manifest(path).size_bytes if read_manifest(path) else None
        key = str(Path(path).resolve())
        lat1, lat32 = p50[(key, "run", 1)], p50[(key, "run", 32)]
        ratio = "" if size_ratio is None or size_ratio == 1 else f" ({size_ratio:.2f}x)"
        speedup = f"{predict_b1 / lat1:.0f}x" if predict_b1 else "-"
        rows.append([fmt, bench_engine(bench, key), human_size(size) + ratio, max_abs, f"{agree:.4f}", f"{acc:.4f}",
                     f"{keras_acc - acc:+.4f}", f"{lat1:.3f}", f"{lat32:.3f}", speedup])
    if predict_b1:
        rows.insert(0, ["keras.predict", "keras (Model.predict)", "", "-", "-", "-", "-", f"{predict_b1:.3f}",
                        f"{p50[(str(src.resolve()), 'keras.predict', 32)]:.3f}", "1x"])
    print()
    print(table(["format", "engine", "size", "max abs err", "argmax agree", "test acc", "acc drop",
                 "p50 ms b=1", "p50 ms b=32", "vs predict b=1"], rows))
    print(f"\n{len(labels)} digits test samples; latency = median of {args.repeats} calls after 5 warm-up calls, "
          f"each artifact in its own process, this machine ({os.cpu_count()} CPUs); the keras row is the direct "
          "call model(x), keras.predict is Model.predict.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
