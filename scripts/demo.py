"""`make demo`: train the CNN on digits, convert it to every installed format with parity checks,
run each artifact through modelkit.load, and print one table from real runs."""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def median_latency_ms(model, inputs: dict[str, np.ndarray], batch: int, repeats: int) -> float:
    feed = {k: np.ascontiguousarray(v[:batch]) for k, v in inputs.items()}
    for _ in range(3):
        model.predict(feed)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.predict(feed)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


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
    args = ap.parse_args()

    import modelkit
    from modelkit.cli._common import human_size, table
    from modelkit.core.data import test_split
    from modelkit.core.train import train
    from modelkit.manifest import read as read_manifest

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    src = out / f"{args.model}.keras"
    print(f"== 1. train {args.model} on digits ({args.backend} backend, {args.epochs} epochs)", flush=True)
    summary = train(model=args.model, data="digits", epochs=args.epochs, backend=args.backend, out=str(src),
                    force=True, verbose=True)
    print(f"   test accuracy {summary['test_accuracy']:.4f} -> {src}")

    print("== 2. convert to every installed format + int8 TFLite (each hop verified on the digits test split)",
          flush=True)
    results = modelkit.convert(src, "all", out_dir=out, force=True)
    results += modelkit.convert(src, "tflite", out_dir=out, force=True, options={"quantize": "int8"})

    print("== 3. load every artifact with modelkit.load and measure", flush=True)
    inputs, labels = test_split("digits", args.model, seed=0)
    fp32_size = {r.format: r.size_bytes for r in results if not r.quantization or r.quantization == "none"}
    artifacts = [("keras", str(src), None, None, None)]
    artifacts += [(r.format + (f" {r.quantization}" if r.quantization not in (None, "none") else ""), r.path,
                   r.parity, r.size_bytes / fp32_size[r.format] if r.format in fp32_size else None, r.accuracy)
                  for r in results]
    reference = keras_acc = None
    rows = []
    for fmt, path, parity, size_ratio, gate in artifacts:
        model = modelkit.load(path)
        acc, pred = accuracy(model, inputs, labels)
        if reference is None:
            reference, keras_acc = pred, acc
        agree = float((pred == reference).mean())
        max_abs = "-" if parity is None else f"{max(o['max_abs'] for o in parity['outputs']):.1e}"
        size = read_manifest(path).size_bytes if read_manifest(path) else None
        lat1 = median_latency_ms(model, inputs, 1, args.repeats)
        lat32 = median_latency_ms(model, inputs, 32, max(10, args.repeats // 3))
        ratio = "" if size_ratio is None or size_ratio == 1 else f" ({size_ratio:.2f}x)"
        rows.append([fmt, model.engine, human_size(size) + ratio, max_abs, f"{agree:.4f}", f"{acc:.4f}",
                     f"{keras_acc - acc:+.4f}", f"{lat1:.3f}", f"{lat32:.3f}"])
    print()
    print(table(["format", "engine", "size", "max abs err", "argmax agree", "test acc", "acc drop",
                 "p50 ms b=1", "p50 ms b=32"], rows))
    print(f"\n{len(labels)} digits test samples; latency = median of {args.repeats} runs after warm-up, "
          f"this machine ({os.cpu_count()} CPUs), direct model call for keras.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
