"""modelkit's artifacts against the engines a user would otherwise call by hand, side by side in one process.

    python benchmarks/peers.py [--out bench-out/peers] [--threads 1] [--batch 1,32] [--image-size 224]
                               [--trained-size 64] [--rounds 7] [--round-seconds 0.3]
                               [--models cnn,mnet-digits,mnet]

Models: `cnn`, the digits CNN (trained by `modelkit train`); `mnet-digits`, MobileNetV2 1.0 trained on the
digits upscaled to --trained-size (benchmarks/bench_formats.py:train_mobilenet, minutes, cached) -- the model
int8 and bf16 are judged on; `mnet`, MobileNetV2 1.0 at --image-size with random weights (BatchNorm statistics
from one seeded batch, so outputs depend on the input) -- the exact engines at full size. Each is converted
by `modelkit convert` (every hop verified): ONNX, TFLite, TorchScript, OpenVINO IR, ExecuTorch where they are
there, and int8 ONNX / TFLite / OpenVINO (NNCF) and bf16 OpenVINO, each accuracy-gated: the trained models on
the digits test split with at most a 0.01 drop, the random MobileNetV2 on labels its own fp32 model gave (top-1
agreement, 0.05).

Rows, at each batch: every modelkit artifact through `modelkit.load(...).predict(...)`, and the peers a
user would call directly on the same files: onnxruntime's InferenceSession, OpenVINO's Core on the ONNX file
with f32 pinned and with its defaults (bf16 on AMX CPUs: marked lossy), TFLite's Interpreter on the fp32 and
int8 files. Timing: interleaved rounds (each round times every row for about --round-seconds and keeps the
median per call), so a neighbour's burst slows every row of that round alike; the ratio to raw onnxruntime is
the median of the per-round ratios. Max abs diff is against raw onnxruntime on the fp32 ONNX file (exact);
test accuracy (trained models) is each row's top-1 on the digits test split. Every engine gets --threads
intra-op threads (default 1: on a shared 2-core machine a 2-thread team waits for a descheduled worker).
The goals of issue 19 are printed under each table. Numbers are printed and written to peers.json /
peers.md, never asserted.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.perf_targets import holds, median_ratio, sized_rounds  # noqa: E402
from modelkit import _child  # noqa: E402
from modelkit.errors import ModelkitError  # noqa: E402

EXACT_ATOL = 1e-4  # a row within this of raw onnxruntime counts as exact


def _log(msg: str) -> None:
    print(f"[peers] {msg}", file=sys.stderr, flush=True)


TITLES = {"cnn": "digits CNN (trained)", "mnet": "MobileNetV2 1.0 {size} (random weights)",
          "mnet-digits": "MobileNetV2 1.0 {trained} trained on the digits"}


def prepare(folder: Path, image_size: int, trained_size: int, models: list[str]) -> dict[str, dict[str, Path]]:
    """The sources and every artifact for each model, converted by modelkit (cached in `folder`)."""
    import modelkit
    from modelkit.converters import output_path
    from modelkit.formats import Format

    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, dict[str, Path]] = {}
    for key in models:
        src = _source(folder, key, image_size, trained_size)
        arts: dict[str, Path] = {"keras": src}
        for fmt in ("onnx", "tflite", "torchscript", "openvino", "executorch"):
            dest = output_path(src, Format(fmt), folder)
            if not dest.exists():
                try:
                    _log(f"converting {src.name} -> {fmt}")
                    results = modelkit.convert(src, fmt, out_dir=folder, verbose=False)
                    dest = Path(results[-1].path)
                except ModelkitError as exc:
                    _log(f"no {fmt} for {src.name}: {exc}")
                    continue
            arts[fmt] = dest
        if key == "mnet":  # random weights: the gate measures top-1 agreement with its own fp32 model
            calib, evals = _self_labelled(arts["onnx"], folder, image_size)
            options: dict[str, Any] = {"calibration_data": str(calib), "eval_data": str(evals),
                                       "max_accuracy_drop": 0.05}
        else:  # trained: the gate is the test accuracy, at most 1 % lower
            options = {"max_accuracy_drop": 0.01}
            if key == "mnet-digits":
                calib, evals = _digits_files(folder, trained_size)
                options.update(calibration_data=str(calib), eval_data=str(evals))
        for fmt, mode in (("onnx", "int8"), ("tflite", "int8"), ("openvino", "int8"), ("openvino", "bf16")):
            if fmt not in arts:
                continue
            dest = output_path(src, Format(fmt), folder, mode)
            if not dest.exists():
                try:
                    _log(f"quantizing {src.name} -> {mode} {fmt}")
                    results = modelkit.convert(src, fmt, out_dir=folder, quantize=mode, verbose=False, **options)
                    dest = Path(results[-1].path)
                except ModelkitError as exc:
                    _log(f"no {mode} {fmt} for {src.name}: {exc}")
                    continue
            arts[f"{fmt} {mode}"] = dest
        out[key] = arts
    return out


def _source(folder: Path, key: str, image_size: int, trained_size: int) -> Path:
    if key == "cnn":
        src = folder / "cnn.keras"
        if not src.exists():
            _log(f"training the digits CNN -> {src}")
            _child.run("modelkit.core.train:train", {"model": "cnn", "data": "digits", "epochs": 5,
                                                      "out": str(src), "force": True, "verbose": False},
                       backend="tensorflow")
    elif key == "mnet-digits":
        src = folder / f"mobilenetv2_1.0_{trained_size}_digits.keras"
        if not src.exists():
            _log(f"training MobileNetV2 1.0 on the digits at {trained_size}x{trained_size} -> {src} (minutes)")
            _child.run("benchmarks.bench_formats:train_mobilenet", {"out": str(src), "image_size": trained_size},
                       backend="tensorflow")
    elif key == "mnet":
        src = folder / f"mobilenetv2_1.0_{image_size}.keras"
        if not src.exists():
            _log(f"building MobileNetV2 1.0 {image_size}x{image_size} -> {src}")
            _child.run("benchmarks.bench_formats:build_mobilenet",
                       {"out": str(src), "image_size": image_size, "alpha": 1.0}, backend="tensorflow")
    else:
        raise SystemExit(f"unknown model '{key}': use cnn, mnet, mnet-digits")
    return src


def _digits_files(folder: Path, size: int) -> tuple[Path, Path]:
    """Calibration images (training split) and the labelled test split, upscaled as the model was trained."""
    from modelkit.core import data

    calib, evals = folder / f"digits{size}_calib.npz", folder / f"digits{size}_test.npz"
    if not evals.exists():
        ds = data.load_digits_split(seed=0)
        np.savez(calib, x=data.model_inputs("mobilenetv2", ds.x_train[:200], image_size=size)["image"])
        np.savez(evals, x=data.model_inputs("mobilenetv2", ds.x_test, image_size=size)["image"], y=ds.y_test)
    return calib, evals


def test_set(key: str, arts: dict[str, Path], trained_size: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(inputs, labels) of the digits test split for a trained model, None for the random MobileNetV2."""
    if key == "mnet-digits":
        with np.load(_digits_files(arts["keras"].parent, trained_size)[1]) as z:
            return z["x"], z["y"]
    if key == "cnn":
        from modelkit.core import data

        ds = data.load_digits_split(seed=0)
        return data.model_inputs("cnn", ds.x_test)["image"], ds.y_test
    return None


def _self_labelled(onnx_path: Path, folder: Path, image_size: int) -> tuple[Path, Path]:
    """Seeded calibration images, and evaluation images labelled by the fp32 model (top-1 agreement)."""
    import modelkit

    calib, evals = folder / f"mnet{image_size}_calib.npz", folder / f"mnet{image_size}_eval.npz"
    if not evals.exists():
        x = np.random.default_rng(1).random((96, image_size, image_size, 3), dtype=np.float32)
        np.savez(calib, x=x[:32])
        m = modelkit.load(onnx_path)
        y = np.concatenate([np.argmax(next(iter(m.predict(x[i:i + 8]).values())), -1) for i in range(32, 96, 8)])
        np.savez(evals, x=x[32:], y=y.astype(np.int64))
    return calib, evals


# ------------------------------------------------------------------------------------------------ rows

def raw_ort_row(arts: dict[str, Path], threads: int) -> tuple[Callable[[np.ndarray], Any], str]:
    """The "onnxruntime (raw)" row: the reference every row's outputs are compared with (measure)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    sess = ort.InferenceSession(str(arts["onnx"]), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return (lambda x: sess.run(None, {name: x})[0], "peer")


def peer_rows(arts: dict[str, Path], threads: int) -> dict[str, tuple[Callable[[np.ndarray], Any], str]]:
    """name -> (call(x) -> first output, note) for the engines a user would call by hand."""
    rows: dict[str, tuple[Callable[[np.ndarray], Any], str]] = {"onnxruntime (raw)": raw_ort_row(arts, threads)}
    try:
        import openvino as ov
    except ImportError:
        _log("openvino is not installed: no OpenVINO peer rows")
    else:
        core = ov.Core()
        for label, config, note in (("OpenVINO f32 (pinned)", {"INFERENCE_PRECISION_HINT": "f32"}, "peer"),
                                    ("OpenVINO default", {}, "peer, its default precision")):
            config = {**config, "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
            compiled = core.compile_model(str(arts["onnx"]), "CPU", config)
            precision = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
            req = compiled.create_infer_request()
            rows[label] = ((lambda x, r=req: r.infer({0: x})[0]), f"{note} ({precision})")
    from ai_edge_litert.interpreter import Interpreter

    for key, label in (("tflite", "TFLite fp32 (raw)"), ("tflite int8", "TFLite int8 (raw)")):
        if key in arts:
            rows[label] = (_tflite_call(Interpreter(model_path=str(arts[key]), num_threads=threads)), "peer")
    return rows


def _tflite_call(it: Any) -> Callable[[np.ndarray], Any]:
    state = {"shape": None}
    d_in, d_out = it.get_input_details()[0], it.get_output_details()[0]

    def call(x: np.ndarray) -> Any:
        if state["shape"] != x.shape:
            it.resize_tensor_input(d_in["index"], list(x.shape))
            it.allocate_tensors()
            state["shape"] = x.shape
        it.set_tensor(d_in["index"], x)
        it.invoke()
        return it.get_tensor(d_out["index"])
    return call


def modelkit_rows(arts: dict[str, Path], threads: int) -> dict[str, tuple[Callable[[np.ndarray], Any], str]]:
    import modelkit

    rows = {}
    for key, path in arts.items():
        if key == "keras":
            continue
        m = modelkit.load(path, threads=threads)
        out = m.signature.output_names[0]
        rows[f"modelkit {key}"] = ((lambda x, m=m, out=out: m.predict(x)[out]), m.engine)
    return rows


def measure(rows: dict[str, tuple[Callable[[np.ndarray], Any], str]], x: np.ndarray, rounds: int,
            round_seconds: float, test: tuple[np.ndarray, np.ndarray] | None = None) -> list[dict[str, Any]]:
    ref = np.asarray(rows["onnxruntime (raw)"][0](x))
    fns = {k: (lambda f=f: f(x)) for k, (f, _note) in rows.items()}
    t = sized_rounds(fns, rounds, round_seconds)
    out = []
    for k, (f, note) in rows.items():
        diff = float(np.abs(np.asarray(f(x), np.float32) - ref).max())
        out.append({"row": k, "note": note, "p50_ms": float(np.median(t[k])) * 1e3,
                    "vs_raw_ort": median_ratio(t[k], t["onnxruntime (raw)"]), "max_abs_diff": diff,
                    "exact": diff <= EXACT_ATOL, "lossy": _lossy(k) or diff > EXACT_ATOL,
                    "accuracy": None if test is None else accuracy(f, *test)})
    return out


def _lossy(row: str) -> bool:
    return any(mode in row for mode in ("int8", "bf16", "OpenVINO default"))


def accuracy(call: Callable[[np.ndarray], Any], x: np.ndarray, y: np.ndarray, batch: int = 32) -> float:
    """Top-1 accuracy of one row on a labelled test set."""
    hits = sum(int((np.argmax(np.asarray(call(x[i:i + batch])), -1) == y[i:i + batch]).sum())
               for i in range(0, len(x), batch))
    return hits / len(x)


def table(results: list[dict[str, Any]]) -> str:
    labelled = any(r["accuracy"] is not None for r in results)
    head = "| row | p50 ms | vs raw ORT | max abs diff |" + (" test accuracy |" if labelled else "") + " note |"
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for r in sorted(results, key=lambda r: r["p50_ms"]):
        lossy = " (lossy)" if r["lossy"] else ""
        acc = f" {r['accuracy']:.4f} |" if labelled and r["accuracy"] is not None else (" - |" if labelled else "")
        lines.append(f"| {r['row']}{lossy} | {r['p50_ms']:.3f} | {r['vs_raw_ort']:.2f}x | {r['max_abs_diff']:.1e} |"
                     f"{acc} {r['note']} |")
    return "\n".join(lines)


def verdict(results: list[dict[str, Any]]) -> list[str]:
    """The issue's goals, as sentences: best exact modelkit vs best exact peer; int8 vs fp32 of the same
    engine; the fastest accuracy-gated modelkit artifact vs the fastest exact artifact, with its drop."""
    by = {r["row"]: r for r in results}
    exact = [r for r in results if r["exact"]]
    mine = [r for r in exact if r["row"].startswith("modelkit")]
    peers = [r for r in exact if not r["row"].startswith("modelkit")]
    lines = []
    if mine and peers:
        best_mine, best_peer = _fastest(mine), _fastest(peers)
        lines.append(f"best exact modelkit artifact {_at(best_mine)} vs best exact peer {_at(best_peer)}: "
                     f"{_goal(best_mine['p50_ms'] / best_peer['p50_ms'], '<=', 1.0)}")
    for engine in ("onnx", "tflite", "openvino"):
        fp32, q = by.get(f"modelkit {engine}"), by.get(f"modelkit {engine} int8")
        if fp32 and q:
            speedup = fp32["p50_ms"] / q["p50_ms"]
            lines.append(f"int8 {engine}: {speedup:.2f}x its fp32 ({q['p50_ms']:.3f} vs {fp32['p50_ms']:.3f} ms)"
                         f"{_drop(q, fp32)} {_goal(speedup, '>=', 2, shown=False)}")
    gated = [r for r in results if r["row"].startswith("modelkit") and _lossy(r["row"])]
    if gated and exact:
        fast, best = _fastest(gated), _fastest(exact)
        speedup = best["p50_ms"] / fast["p50_ms"]
        lines.append(f"fastest accuracy-gated artifact {_at(fast)} vs fastest exact {_at(best)}: {speedup:.2f}x"
                     f"{_drop(fast, best)} {_goal(speedup, '>=', 2, shown=False)}")
        silent = by.get("OpenVINO default")
        if silent:
            lines.append(f"vs OpenVINO's own default ({silent['note'].split('(')[-1].rstrip(')')}, not gated) "
                         f"{silent['p50_ms']:.3f} ms: {silent['p50_ms'] / fast['p50_ms']:.2f}x"
                         f"{_drop(fast, silent)}")
    return lines or ["goal: n/a"]


def _fastest(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return min(rows, key=lambda r: r["p50_ms"])


def _at(row: dict[str, Any]) -> str:
    return f"{row['row']} {row['p50_ms']:.3f} ms"


def _goal(ratio: float, op: str, target: float, shown: bool = True) -> str:
    """'1.02x (goal <= 1.0x: not met)'; shown=False leaves the ratio out (the sentence already has it)."""
    met = holds(ratio, op, target)
    head = f"{ratio:.2f}x " if shown else ""
    return f"{head}(goal {op} {target}x: {'met' if met else 'not met'})"


def _drop(lossy: dict[str, Any], exact: dict[str, Any]) -> str:
    if lossy["accuracy"] is None or exact["accuracy"] is None:
        return ""
    drop = exact["accuracy"] - lossy["accuracy"]
    return f", accuracy {lossy['accuracy']:.4f} vs {exact['accuracy']:.4f} (drop {drop:+.4f})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(os.environ.get("BENCH_OUT", "bench-out")) / "peers"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", default="1,32")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--round-seconds", type=float, default=0.3)
    ap.add_argument("--trained-size", type=int, default=64, help="input size of the trained MobileNetV2")
    ap.add_argument("--models", default="cnn,mnet-digits,mnet")
    args = ap.parse_args(argv)
    out = Path(args.out)
    models = [m for m in args.models.split(",") if m]
    arts = prepare(out / "models", args.image_size, args.trained_size, models)
    report: dict[str, Any] = {"threads": args.threads, "rounds": args.rounds, "models": {}}
    md = [f"# peers ({args.threads} thread(s) per engine, {args.rounds} interleaved rounds)", ""]
    for key in models:
        rows = {**peer_rows(arts[key], args.threads), **modelkit_rows(arts[key], args.threads)}
        import modelkit

        spec = modelkit.load(arts[key]["onnx"]).signature.inputs[0]
        for batch in (int(b) for b in args.batch.split(",")):
            shape = spec.concrete_shape(batch)
            x = np.random.default_rng(0).random(shape, dtype=np.float32)
            _log(f"measuring {key} at batch {batch} ({len(rows)} rows)")
            results = measure(rows, x, args.rounds, args.round_seconds, test_set(key, arts[key], args.trained_size))
            report["models"][f"{key} b={batch}"] = results
            title = TITLES[key].format(size=args.image_size, trained=args.trained_size)
            lines = [f"## {title}, batch {batch}", "", table(results), "", *[f"- {v}" for v in verdict(results)], ""]
            md += lines
            print("\n".join(lines), flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "peers.json").write_text(json.dumps(report, indent=1))
    (out / "peers.md").write_text("\n".join(md))
    _log(f"wrote {out / 'peers.md'} and peers.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
