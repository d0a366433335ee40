"""TVM untuned vs tuned vs warm-database vs onnxruntime: the digits CNN (trained) and MobileNetV2 (alpha 0.35).

    python benchmarks/bench_tvm.py [--out bench-out/tvm] [--budget 60s] [--models cnn] [--batches 1,32]
                                   [--warm-trials 8] [--image-size 96] [--duration 20s]

Trains (or reuses) the CNN, builds MobileNetV2, converts both to ONNX, and at each batch compiles each
for server-cpu three ways: untuned (the default schedules of docs/tvm.md, "Untuned performance"); tuned
with MetaSchedule for --budget; and "warm": a related model (the same network with a new 5-class head, as
a fine-tuned copy would have) compiled with --warm-trials against the shared tuning database the tuned
compile just filled, so its backbone tasks come from the database and only its new tasks are tuned (the
row shows the seconds spent tuning and how many tasks came from the database). The database is cached in
OUT/cache, so a rerun measures again without tuning. Every library is verified against its ONNX model,
then all engines are timed in this one process in interleaved rounds (each round times a block of calls of
every engine, in a shuffled order; --duration is the whole timing's length per model and batch); the medians
over rounds, and the median of each round's ratio to onnxruntime, are printed, never asserted.

Both engines keep their thread pools spinning for a while after a call, so on a small machine the engine that
runs next in a round can lose a core to the other's idle workers (measured on 2 cores: either one up to 2x,
depending on the pair); interleaving spreads that over every row, and a rerun shows how large it was.
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
from benchmarks.perf_targets import median_ratio, sized_rounds  # noqa: E402
from modelkit.bench.stats import parse_duration  # noqa: E402


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


def with_new_head(src: Path, dest: Path, classes: int = 5) -> Path:
    """The model at src with its last dense layer (MatMul by a weight [+ bias]) replaced by a random one with
    `classes` outputs: the same backbone, so the same tuning workloads, and a head of its own."""
    import onnx
    from onnx import numpy_helper

    if dest.exists():
        return dest
    proto = onnx.load(str(src))
    inits = {i.name: i for i in proto.graph.initializer}
    matmul = [n for n in proto.graph.node if n.op_type == "MatMul" and n.input[1] in inits][-1]
    rng = np.random.default_rng(5)
    weight = numpy_helper.to_array(inits[matmul.input[1]])
    old = weight.shape[-1]
    inits[matmul.input[1]].CopyFrom(numpy_helper.from_array(
        (rng.standard_normal((weight.shape[0], classes)) / np.sqrt(weight.shape[0])).astype(weight.dtype),
        matmul.input[1]))
    for node in proto.graph.node:  # its bias
        if node.op_type == "Add" and matmul.output[0] in node.input:
            bias = next((i for i in node.input if i in inits and inits[i].dims == [old]), None)
            if bias:
                inits[bias].CopyFrom(numpy_helper.from_array(np.zeros(classes, np.float32), bias))
    for out in proto.graph.output:
        dims = out.type.tensor_type.shape.dim
        if dims and dims[-1].dim_value == old:
            dims[-1].dim_value = classes
    onnx.checker.check_model(proto)
    onnx.save(proto, str(dest))
    return dest


def compile_one(onnx_path: Path, folder: Path, kind: str, batch: int, **opts) -> dict:
    from modelkit.targets import compile

    t0 = time.perf_counter()
    r = compile(onnx_path, target="server-cpu", out=folder / f"{onnx_path.stem}.b{batch}.{kind}.tvm.so",
                batch=batch, force=True, **opts)
    return {"path": r.path, "wall_s": round(time.perf_counter() - t0, 1), "tuning": r.tuning,
            "max_abs": max(o["max_abs"] for o in r.parity["outputs"])}


def interleaved_ms(paths: dict[str, str], feed: dict, duration: float, rounds: int = 7) -> dict[str, list[float]]:
    """Each engine's median per round (ms), interleaved rounds over all of them (perf_targets.sized_rounds);
    the blocks are sized so that the whole timing takes about `duration` seconds."""
    models = {name: modelkit.load(path) for name, path in paths.items()}
    fns = {name: (lambda m=m: m.predict(feed)) for name, m in models.items()}
    times = sized_rounds(fns, rounds, duration / rounds / len(fns), at_most=500)
    return {name: [t * 1e3 for t in ts] for name, ts in times.items()}


def tuning_note(lib: dict) -> str:
    t = lib.get("tuning") or {}
    if not t:
        return "-"
    return (f"{t.get('trials_run', 0)} trials in {t.get('seconds', 0.0):.0f} s, "
            f"{t.get('tasks_from_db', 0)}/{t.get('tasks', 0)} tasks from the db")


def run_batch(name: str, onnx_path: Path, related: Path, out: Path, batch: int, args: argparse.Namespace,
              duration: float) -> tuple[list[list[str]], dict]:
    """Compile and time the three libraries (and onnxruntime) of one model at one batch."""
    cache = {"cache_dir": out / "cache"}
    libs = {"tvm untuned": compile_one(onnx_path, out, "untuned", batch),
            "tvm tuned": compile_one(onnx_path, out, "tuned", batch, budget=args.budget, **cache),
            "tvm warm db (new head)": compile_one(related, out, "warm", batch, trials=args.warm_trials, **cache)}
    rng = np.random.default_rng(0)
    ort = modelkit.load(onnx_path)
    feed = {s.name: rng.random(s.concrete_shape(batch), dtype=np.float32) for s in ort.signature.inputs}
    paths = {"onnxruntime": str(onnx_path), "onnxruntime (new head)": str(related),
             **{engine: lib["path"] for engine, lib in libs.items()}}
    rounds = interleaved_ms(paths, feed, duration)
    t = {engine: float(np.median(ms)) for engine, ms in rounds.items()}
    ratio = {engine: median_ratio(ms, rounds["onnxruntime (new head)" if "new head" in engine else "onnxruntime"])
             for engine, ms in rounds.items()}
    rows = [[name, str(batch), engine, f"{t[engine]:.3f}", f"{ratio[engine]:.2f}",
             tuning_note(libs.get(engine, {}))] for engine in t]
    return rows, {"median_ms": t, "ratio_to_onnxruntime": ratio, **libs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench-out/tvm")
    ap.add_argument("--budget", default="60s", help="tuning budget per model and batch (e.g. 60s, 10m)")
    ap.add_argument("--warm-trials", type=int, default=8,
                    help="trials for the related model compiled against the warm database (its new tasks)")
    ap.add_argument("--batches", default="1,32", help="batch sizes to compile and time, e.g. 1 or 1,32")
    ap.add_argument("--image-size", type=int, default=96, help="MobileNetV2 input size (<= 224)")
    ap.add_argument("--duration", default="20s",
                    help="timing per model and batch, all engines together (interleaved rounds)")
    ap.add_argument("--models", default="cnn,mobilenetv2", help="which of cnn, mobilenetv2 to run")
    args = ap.parse_args()
    from modelkit._text import table

    wanted = {m.strip() for m in args.models.split(",") if m.strip()}
    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    out = Path(args.out)
    duration = parse_duration(args.duration)
    rows, report = [], {}
    for name, onnx_path in models(out / "models", args.image_size).items():
        if name.split("_")[0] not in wanted:
            continue
        related = with_new_head(onnx_path, onnx_path.with_name(f"{onnx_path.stem}_head5.onnx"))
        for batch in batches:
            batch_rows, report[f"{name}@{batch}"] = run_batch(name, onnx_path, related, out, batch, args, duration)
            rows += batch_rows
            print(json.dumps({f"{name}@{batch}": report[f"{name}@{batch}"]["median_ms"]}), file=sys.stderr,
                  flush=True)
    print(table(["model", "batch", "engine", "median ms", "x onnxruntime", "tuning"], rows))
    (out / "bench_tvm.json").write_text(json.dumps(report, indent=2, default=str))
    print(f"\nwrote {out / 'bench_tvm.json'} (compile times, tuning info, parity)")


if __name__ == "__main__":
    main()
