"""TVM tuned vs untuned vs onnxruntime: the digits CNN (trained) and MobileNetV2 (alpha 0.35), batch 1.

    python benchmarks/bench_tvm.py [--out bench-out/tvm] [--budget 60s] [--image-size 96] [--duration 2s]

Trains (or reuses) the CNN, builds MobileNetV2, converts both to ONNX, compiles each for server-cpu
twice at batch 1 (untuned: the default schedules of docs/tvm.md, "Untuned performance"; and tuned with
MetaSchedule for --budget per model; the tuning database is
cached in OUT/cache, so a rerun measures again without tuning), verifies every library against its ONNX
model, then times all three engines in this one process and prints medians and ratios. Numbers are
printed, never asserted; on a shared machine, rerun for stable medians.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

import modelkit  # noqa: E402
from modelkit.bench.stats import parse_duration, time_calls  # noqa: E402


def models(folder: Path, image_size: int) -> dict[str, Path]:
    from benchmarks.bench_formats import sources

    cnn, mnet = sources(folder, image_size)  # the same trained CNN and MobileNetV2 as bench_formats
    out = {}
    for name, src in (("cnn", cnn), (f"mobilenetv2_{image_size}", mnet)):
        onnx_path = folder / (src.name[: -len(".keras")] + ".onnx")
        if not onnx_path.exists():
            modelkit.convert(src, "onnx", out_dir=folder)
        out[name] = onnx_path
    return out


def compile_pair(onnx_path: Path, folder: Path, budget: str) -> tuple[dict, dict]:
    from modelkit.targets import compile

    libs = {}
    for kind, opts in (("untuned", {}), ("tuned", {"budget": budget, "cache_dir": folder / "cache"})):
        t0 = time.perf_counter()
        r = compile(onnx_path, target="server-cpu", out=folder / f"{onnx_path.stem}.{kind}.tvm.so", batch=1,
                    force=True, **opts)
        libs[kind] = {"path": r.path, "wall_s": round(time.perf_counter() - t0, 1), "tuning": r.tuning,
                      "max_abs": max(o["max_abs"] for o in r.parity["outputs"])}
    return libs["untuned"], libs["tuned"]


def median_ms(path: str, feed: dict, duration: float) -> float:
    m = modelkit.load(path)
    times = time_calls(lambda: m.predict(feed), duration=duration, warmup=3)
    return float(np.median(times) * 1e3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench-out/tvm")
    ap.add_argument("--budget", default="60s", help="tuning budget per model (e.g. 60s, 10m)")
    ap.add_argument("--image-size", type=int, default=96, help="MobileNetV2 input size (<= 224)")
    ap.add_argument("--duration", default="2s", help="timed calls per engine")
    ap.add_argument("--models", default="cnn,mobilenetv2", help="which of cnn, mobilenetv2 to run")
    args = ap.parse_args()
    from modelkit._text import table

    wanted = {m.strip() for m in args.models.split(",") if m.strip()}
    out = Path(args.out)
    duration = parse_duration(args.duration)
    rows, report = [], {}
    for name, onnx_path in models(out / "models", args.image_size).items():
        if name.split("_")[0] not in wanted:
            continue
        untuned, tuned = compile_pair(onnx_path, out, args.budget)
        ort = modelkit.load(onnx_path)
        rng = np.random.default_rng(0)
        feed = {s.name: rng.random(s.concrete_shape(1), dtype=np.float32) for s in ort.signature.inputs}
        t = {"onnxruntime": median_ms(str(onnx_path), feed, duration),
             "tvm untuned": median_ms(untuned["path"], feed, duration),
             "tvm tuned": median_ms(tuned["path"], feed, duration)}
        report[name] = {"median_ms": t, "untuned": untuned, "tuned": tuned}
        trials = (tuned["tuning"] or {}).get("records_after")
        for engine, ms in t.items():
            rows.append([name, engine, f"{ms:.3f}", f"{ms / t['onnxruntime']:.2f}", f"{ms / t['tvm untuned']:.2f}",
                         f"{trials} records" if engine == "tvm tuned" else "-"])
        print(json.dumps({name: report[name]["median_ms"]}), file=sys.stderr, flush=True)
    print(table(["model", "engine", "median ms (batch 1)", "x onnxruntime", "x tvm untuned", "tuning"], rows))
    (out / "bench_tvm.json").write_text(json.dumps(report, indent=2, default=str))
    print(f"\nwrote {out / 'bench_tvm.json'} (compile times, tuning records, parity)")


if __name__ == "__main__":
    main()
