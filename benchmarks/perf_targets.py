"""Performance targets, measured side by side on this machine: one row per figure, target, measured, holds.

    python benchmarks/perf_targets.py [--out bench-out/targets] [--quick] [--tvm-budget 20m] [--only overhead,...]

Figures (see docs/performance.md): runtime overhead of modelkit.load(p).predict over the raw engine
call, deployment speed-up over Keras predict, TFLite int8 vs fp32, tuned TVM vs onnxruntime, conversion
time vs the stock Keras exports, serving throughput vs TorchServe, import+load time and install size,
and the roofline fraction of the best MobileNetV2 artifact. Every latency is a median over repeated
rounds; every comparison runs both sides interleaved in one process, so a busy neighbour slows both.
Nothing is asserted: the table says whether each target holds. --quick shortens every loop (same
figures, wider noise); --tvm-budget sets the MetaSchedule budget (the tuning database is cached in
OUT/tvm-cache, so a rerun with the same budget only measures).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

FOOTPRINT_VENV = Path("/tmp/mk-footprint-venv")
ONNX_EXTRA = ("numpy", "click", "onnx", "onnxruntime", "onnxscript", "onnxslim", "protobuf")
BOOTSTRAP = ("pip", "setuptools", "_distutils", "pkg_resources", "distutils-precedence")  # not modelkit's
FIGURES = ("overhead", "speedup", "int8", "tvm", "conversion", "serving", "footprint", "roofline")


# ------------------------------------------------------------------------------------------ pure helpers

@dataclass
class Row:
    figure: str
    target: str
    measured: str
    holds: bool | None  # None: reported only, or could not be measured
    note: str = ""


def holds(value: float | None, op: str, threshold: float) -> bool | None:
    """Whether `value op threshold` ('<=' or '>='); None when nothing was measured."""
    if value is None or not np.isfinite(value):
        return None
    if op == "<=":
        return bool(value <= threshold)
    if op == ">=":
        return bool(value >= threshold)
    raise ValueError(f"unknown comparison '{op}'")


def side_by_side(fns: dict[str, Callable[[], Any]], rounds: int, calls: int, warmup: int = 3
                 ) -> dict[str, list[float]]:
    """Interleave the functions: each round times `calls` calls of each in turn and keeps the median per
    call (seconds). Returns name -> one median per round, so ratios can be taken round by round. The order
    within a round is shuffled (seeded): a row never always follows the same neighbour (a long torch call
    whose thread pool is still spinning, a cache another engine just filled)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    out: dict[str, list[float]] = {k: [] for k in fns}
    clock = time.perf_counter
    order = np.random.default_rng(0)
    names = list(fns)
    for _ in range(rounds):
        for name in order.permutation(names):
            fn = fns[name]
            times = []
            for _ in range(calls):
                t0 = clock()
                fn()
                times.append(clock() - t0)
            out[name].append(float(np.median(times)))
    return out


def sized_rounds(fns: dict[str, Callable[[], Any]], rounds: int, block_s: float, at_most: int = 2000
                 ) -> dict[str, list[float]]:
    """side_by_side with every block about block_s seconds long for the slowest function (one call of each,
    timed after a first call, sizes it): at least 3 calls, at most at_most."""
    per_call = {}
    for name, fn in fns.items():
        fn()
        t0 = time.perf_counter()
        fn()
        per_call[name] = max(time.perf_counter() - t0, 1e-6)
    calls = int(max(3, min(at_most, block_s / max(per_call.values()))))
    return side_by_side(fns, rounds, calls)


def median_ratio(num: list[float], den: list[float]) -> float:
    """Median over rounds of num/den (both measured in the same round)."""
    return float(np.median(np.asarray(num) / np.asarray(den)))


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f} ms" if seconds < 0.1 else f"{seconds:.2f} s"


def markdown_table(rows: list[Row]) -> str:
    lines = ["| figure | target | measured | holds |", "| --- | --- | --- | --- |"]
    for r in rows:
        mark = {True: "yes", False: "**no**", None: "n/a"}[r.holds]
        lines.append(f"| {r.figure} | {r.target} | {r.measured} | {mark} |")
    return "\n".join(lines)


def dir_size_mb(path: Path) -> float:
    """Apparent size in MB (1e6 bytes) of every regular file under path (links not followed)."""
    total = 0
    for p in path.rglob("*"):
        if p.is_file() and not p.is_symlink():
            total += p.stat().st_size
    return total / 1e6


def pinned(pyproject: Path, names: tuple[str, ...]) -> list[str]:
    """'name==version' for each name, from the first pin of it in pyproject.toml."""
    import re

    text = pyproject.read_text()
    out = []
    for n in names:
        m = re.search(rf'"{re.escape(n)}==([^"]+)"', text)
        if not m:
            raise ValueError(f"{n} is not pinned in {pyproject}")
        out.append(f"{n}=={m.group(1)}")
    return out


# ------------------------------------------------------------------------------------------ models

def prepare(folder: Path, image_size: int) -> dict[str, Path]:
    """Train (or reuse) the digits CNN, build MobileNetV2 (alpha 0.35, BatchNorm statistics from one
    seeded batch), and convert each to the formats the figures need (every hop verified)."""
    import modelkit
    from modelkit import _child

    folder.mkdir(parents=True, exist_ok=True)
    cnn, mnet = folder / "cnn.keras", folder / f"mobilenetv2_{image_size}.keras"
    if not cnn.exists():
        _log(f"training the digits CNN -> {cnn}")
        _child.run("modelkit.core.train:train", {"model": "cnn", "data": "digits", "epochs": 5, "out": str(cnn),
                                                  "force": True, "verbose": False}, backend="tensorflow")
    if not mnet.exists():
        _log(f"building MobileNetV2 {image_size}x{image_size} -> {mnet}")
        _child.run("benchmarks.bench_formats:build_mobilenet", {"out": str(mnet), "image_size": image_size},
                   backend="tensorflow")
    paths: dict[str, Path] = {"cnn.keras": cnn, "mnet.keras": mnet}
    for key, src in (("cnn", cnn), ("mnet", mnet)):
        stem = src.name[: -len(".keras")]
        for fmt, name in (("onnx", f"{stem}.onnx"), ("tflite", f"{stem}.tflite"),
                          ("torchscript", f"{stem}.torchscript.pt")):
            dest = folder / name
            if not dest.exists():
                _log(f"converting {src.name} -> {fmt}")
                modelkit.convert(src, fmt, out_dir=folder)
            paths[f"{key}.{fmt}"] = dest
    paths["cnn.tvm"] = _tvm_untuned(paths["cnn.onnx"], folder)
    paths["cnn.int8"], paths["cnn.int8_accuracy"] = _int8(cnn, folder, {})
    calib, evals = _mnet_data(paths["mnet.onnx"], folder, image_size)
    paths["mnet.int8"], _ = _int8(mnet, folder, {"calibration_data": str(calib), "eval_data": str(evals),
                                                  # untrained: latency only, its accuracy means nothing
                                                  "max_accuracy_drop": 1.0})
    return paths


def _tvm_untuned(onnx_path: Path, folder: Path) -> Path | None:
    """An untuned batch-1 TVM library (the runtime-overhead figure needs the engine, not its speed)."""
    from modelkit.errors import ModelkitError
    from modelkit.targets import compile as tvm_compile

    dest = folder / f"{onnx_path.stem}.server-cpu.tvm.so"
    if not dest.exists():
        try:
            tvm_compile(onnx_path, target="server-cpu", out=dest, batch=1)
        except ModelkitError as exc:
            _log(f"no TVM library for {onnx_path.name}: {exc}")
            return None
    return dest


def _int8(src: Path, folder: Path, options: dict[str, Any]) -> tuple[Path, Any]:
    import modelkit
    from modelkit import manifest

    dest = folder / (src.name[: -len(".keras")] + ".int8.tflite")
    if not dest.exists():
        _log(f"quantizing {src.name} -> int8 tflite")
        modelkit.convert(src, "tflite", out_dir=folder, options={"quantize": "int8", **options})
    m = manifest.read(dest)
    return dest, (m.extra or {}).get("accuracy") if m is not None else None


def _mnet_data(onnx_path: Path, folder: Path, image_size: int) -> tuple[Path, Path]:
    """Seeded calibration images, and evaluation images labelled by the fp32 model itself (so the int8
    gate measures top-1 agreement with fp32)."""
    import modelkit

    calib, evals = folder / "mnet_calib.npz", folder / "mnet_eval.npz"
    if not evals.exists():
        rng = np.random.default_rng(1)
        x = rng.random((64, image_size, image_size, 3), dtype=np.float32)
        np.savez(calib, x=x[:32])
        m = modelkit.load(onnx_path)
        y = np.concatenate([np.argmax(next(iter(m.predict(x[i:i + 8]).values())), -1) for i in range(32, 64, 8)])
        np.savez(evals, x=x[32:], y=y.astype(np.int64))
    return calib, evals


def _log(msg: str) -> None:
    print(f"[targets] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ raw engine calls

def raw_call(model: Any, feed: dict[str, np.ndarray]) -> Callable[[], Any]:
    """The same engine object modelkit loaded, called the way a careful user calls it directly (numpy in,
    numpy out), with no validation."""
    engine = model.engine
    if engine == "onnxruntime":
        sess, names = model.session, model._output_names
        return lambda: sess.run(names, feed)
    if engine.startswith("ai-edge-litert") or engine.startswith("litert"):
        it = model.interpreter
        ins = [(model._in_index[n], feed[n]) for n in model.signature.input_names]
        outs = list(model._out_index.values())

        def litert() -> Any:
            for i, a in ins:
                it.set_tensor(i, a)
            it.invoke()
            return [it.get_tensor(i) for i in outs]
        return litert
    if engine.startswith("torch"):
        import torch

        mod = model.module
        arrays = [feed[n] for n in model.signature.input_names]

        def torch_call() -> Any:
            with torch.inference_mode():
                out = mod(*[torch.from_numpy(a) for a in arrays])
            return [o.numpy() for o in (out if isinstance(out, (tuple, list)) else (out,))]
        return torch_call
    if engine.startswith("tvm"):
        import tvm

        model.predict(feed)  # loads the VM
        vm, dev = model._vm, model._dev
        arrays = [feed[n] for n in model.signature.input_names]

        def tvm_call() -> Any:
            out = vm["main"](*[tvm.runtime.tensor(a, dev) for a in arrays])
            return out.numpy()
        return tvm_call
    raise ValueError(f"no raw call for engine {engine}")


def sample_feed(model: Any, batch: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {s.name: rng.random(s.concrete_shape(batch), dtype=np.float32) for s in model.signature.inputs}


# ------------------------------------------------------------------------------------------ figures

def fig_overhead(paths: dict[str, Path], quick: bool) -> list[Row]:
    """predict vs the raw engine call, interleaved; one child process per artifact, so no other
    engine's thread pool (onnxruntime's spinning workers, torch's OpenMP team) shares the process."""
    from modelkit import _child

    rows = []
    for key, label in (("cnn", "CNN"), ("mnet", "MobileNetV2")):
        parts = []
        worst = 0.0
        for fmt in ("onnx", "tflite", "torchscript", "tvm"):
            p = paths.get(f"{key}.{fmt}")
            if p is None or not p.exists():
                continue
            r = _child.run("benchmarks.perf_targets:overhead_one", {"path": str(p), "quick": quick})
            worst = max(worst, r["ratio"])
            parts.append(f"{fmt} {r['ratio']:.3f}x ({r['raw_us']:.0f} us raw, {r['over_us']:+.1f} us)")
        rows.append(Row(f"runtime overhead, {label}, batch 1", "<= 1.03x", "; ".join(parts),
                        holds(worst, "<=", 1.03)))
    return rows


def overhead_one(path: str, quick: bool) -> dict[str, float]:
    """Child: modelkit predict and the raw engine call on the same engine object, interleaved."""
    import modelkit

    rounds, budget_s = (7, 0.15) if quick else (21, 0.5)
    # one engine thread: the figure is modelkit's own cost, and on a shared 2-core machine a 2-thread
    # team waits for a descheduled worker on every op (torch: 0.14 ms -> 88 ms for the CNN, measured)
    m = modelkit.load(path, threads=1)
    feed = sample_feed(m)
    raw = raw_call(m, feed)
    for _ in range(3):
        raw()
    t0 = time.perf_counter()
    raw()
    calls = int(max(5, min(5000, budget_s / max(time.perf_counter() - t0, 1e-7) / 2)))
    fns = {"predict": lambda: m.predict(feed), "raw": raw}
    if len(feed) == 1:  # the bare-array path too (one-input models): predict(x)
        (x,) = feed.values()
        fns["bare"] = lambda: m.predict(x)
    t = side_by_side(fns, rounds, calls)
    ratio = max(median_ratio(t[k], t["raw"]) for k in fns if k != "raw")  # the slower of the dict and bare paths
    return {"ratio": ratio, "raw_us": float(np.median(t["raw"])) * 1e6,
            "over_us": float(max(np.median(t[k]) for k in fns if k != "raw") - np.median(t["raw"])) * 1e6}


def fig_speedup_roofline(paths: dict[str, Path], quick: bool, figures: set[str]) -> list[Row]:
    """Keras model.predict vs every MobileNetV2 artifact, interleaved in one TensorFlow child."""
    from modelkit import _child
    from modelkit.bench.flops import count_flops
    from modelkit.bench.roofline import achieved, machine_peak

    arts = {fmt: str(paths[f"mnet.{fmt}"]) for fmt in ("onnx", "tflite", "tvm")
            if paths.get(f"mnet.{fmt}") is not None and paths[f"mnet.{fmt}"].exists()}
    res = _child.run("benchmarks.perf_targets:keras_vs_artifacts",
                     {"keras_path": str(paths["mnet.keras"]), "artifacts": arts, "rounds": 5 if quick else 11,
                      "calls": 5 if quick else 15}, backend="tensorflow")
    best = min(arts, key=lambda k: res["median"][k])
    rows = []
    if "speedup" in figures:
        speed = median_ratio(res["rounds"]["keras"], res["rounds"][best])
        others = ", ".join(f"{k} {fmt_ms(res['median'][k])}" for k in arts)
        rows.append(Row("deployment speed-up, MobileNetV2, batch 1", ">= 20x",
                        f"{speed:.1f}x: Keras predict {fmt_ms(res['median']['keras'])}, best {best} "
                        f"{fmt_ms(res['median'][best])} ({others})", holds(speed, ">=", 20.0)))
    if "roofline" in figures:
        flops = count_flops(paths["mnet.onnx"], 1)["total"]
        peak = machine_peak()
        gflops, frac = achieved(flops, res["median"][best], peak["peak_gflops"])
        rows.append(Row("roofline, best MobileNetV2 artifact, batch 1", ">= 50% of peak (report)",
                        f"{gflops:.1f} GFLOP/s = {100 * (frac or 0):.1f}% of {peak['peak_gflops']:.0f} GFLOP/s "
                        f"({peak['physical_cores']} cores x {peak['clock_mhz']:.0f} MHz x {peak['flops_per_cycle']}"
                        f" {peak['simd']}); {flops / 1e6:.0f} MFLOP/call via {best}",
                        holds(frac, ">=", 0.5)))
    return rows


def keras_vs_artifacts(keras_path: str, artifacts: dict[str, str], rounds: int, calls: int) -> dict[str, Any]:
    """Child (TensorFlow backend): Keras model.predict and each artifact's modelkit predict, interleaved."""
    import keras

    import modelkit

    net = keras.saving.load_model(keras_path)
    x = np.random.default_rng(0).random((1, *net.input_shape[1:]), dtype=np.float32)
    fns: dict[str, Callable[[], Any]] = {"keras": lambda: net.predict(x, verbose=0)}
    for name, p in artifacts.items():
        m = modelkit.load(p)
        feed = {m.signature.inputs[0].name: x}
        fns[name] = (lambda m=m, feed=feed: m.predict(feed))
    t = side_by_side(fns, rounds, calls)
    return {"rounds": t, "median": {k: float(np.median(v)) for k, v in t.items()}}


def fig_int8(paths: dict[str, Path], quick: bool) -> list[Row]:
    import modelkit

    rows = []
    rounds, calls = (5, 50) if quick else (11, 200)
    for key, label in (("cnn", "CNN"), ("mnet", "MobileNetV2")):
        fp32, int8 = modelkit.load(paths[f"{key}.tflite"]), modelkit.load(paths[f"{key}.int8"])
        feed = sample_feed(fp32)
        n = calls if key == "cnn" else max(3, calls // 20)
        t = side_by_side({"fp32": lambda a=fp32, f=feed: a.predict(f), "int8": lambda b=int8, f=feed: b.predict(f)},
                         rounds, n)
        speed = median_ratio(t["fp32"], t["int8"])
        text = (f"{speed:.2f}x faster ({fmt_ms(np.median(t['fp32']))} -> {fmt_ms(np.median(t['int8']))})")
        ok = holds(speed, ">=", 1.5)
        target = ">= 1.5x faster"
        if key == "cnn":
            acc = paths.get("cnn.int8_accuracy") or {}
            drop = acc.get("drop") if isinstance(acc, dict) else None
            target += ", <= 1% accuracy drop"
            if drop is not None:
                text += (f"; accuracy {acc['source_accuracy']:.4f} -> {acc['artifact_accuracy']:.4f}"
                         f" on {acc.get('data', 'digits test')}, drop {100 * drop:.2f}%")
                ok = None if ok is None else (ok and bool(drop <= 0.01))
        rows.append(Row(f"TFLite int8 vs fp32, {label}, batch 1", target, text, ok))
    return rows


def fig_tvm(paths: dict[str, Path], folder: Path, budget: str, quick: bool) -> list[Row]:
    import modelkit
    from modelkit.targets import compile as tvm_compile

    lib = folder / "tvm" / f"{paths['mnet.onnx'].stem}.tuned.tvm.so"
    t0 = time.perf_counter()
    r = tvm_compile(paths["mnet.onnx"], target="server-cpu", out=lib, batch=1, force=True, budget=budget,
                    cache_dir=folder / "tvm-cache")
    wall = time.perf_counter() - t0
    paths["mnet.tvm"] = Path(r.path)
    ort, tvm = modelkit.load(paths["mnet.onnx"]), modelkit.load(r.path)
    feed = sample_feed(ort)
    t = side_by_side({"tvm": lambda: tvm.predict(feed), "ort": lambda: ort.predict(feed)},
                     5 if quick else 11, 5 if quick else 20)
    ratio = median_ratio(t["tvm"], t["ort"])
    tuning = r.tuning or {}
    trials = tuning.get("records_after", tuning.get("records", "?"))
    return [Row("TVM tuned vs onnxruntime, MobileNetV2, batch 1", f"<= 1.0x latency (budget {budget})",
                f"{ratio:.2f}x: TVM {fmt_ms(np.median(t['tvm']))} vs onnxruntime {fmt_ms(np.median(t['ort']))}"
                f" ({trials} tuning records; compile {wall:.0f} s)", holds(ratio, "<=", 1.0))]


def fig_conversion(paths: dict[str, Path], folder: Path, quick: bool) -> list[Row]:
    src = paths["mnet.keras"]
    runs = 1 if quick else 3
    mk_t, stock_t = [], []
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for i in range(runs):  # alternate, so drift hits both
        out = folder / "conv" / f"mk{i}"
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "modelkit", "convert", str(src), "--to", "saved_model,onnx,tflite",
                        "--out", str(out), "--force"], check=True, env=env, stdout=subprocess.DEVNULL)
        mk_t.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", STOCK_EXPORT, str(src), str(folder / "conv" / f"stock{i}")],
                       check=True, env={**env, "KERAS_BACKEND": "tensorflow"}, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        stock_t.append(time.perf_counter() - t0)
    ratio = median_ratio(mk_t, stock_t)
    return [Row("conversion to saved_model,onnx,tflite, MobileNetV2", "<= 1.0x time of stock exports",
                f"{ratio:.2f}x: modelkit convert (verified) {np.median(mk_t):.1f} s vs Keras model.export x3 "
                f"(unverified) {np.median(stock_t):.1f} s, {runs} run(s) each, whole processes",
                holds(ratio, "<=", 1.0))]


STOCK_EXPORT = """
import sys, keras
m = keras.saving.load_model(sys.argv[1])
out = sys.argv[2]
m.export(out + "/saved_model", format="tf_saved_model")
m.export(out + "/model.onnx", format="onnx")
m.export(out + "/model.tflite", format="litert")
"""


def fig_serving(quick: bool) -> list[Row]:
    import tempfile

    from benchmarks import bench_serving as bs

    work = Path(tempfile.mkdtemp(prefix="targets_serving_"))
    ts_path, onnx_path, x, _ = bs.build_models(work)
    v2 = json.dumps({"inputs": [{"name": "x", "shape": [1, bs.D_IN], "datatype": "FP32",
                                 "data": x.ravel().tolist()}]}).encode()
    ts_body = json.dumps({"inputs": {"x": x.tolist()}}).encode()
    n, secs = (1000, 5.0) if quick else (3000, 10.0)
    proc, port = bs.start_modelkit(onnx_path, work, 32)
    try:
        mk = bs.run_load(port, "/v2/models/mlp/infer", v2, {}, 32, n, secs)
    finally:
        bs.stop(proc)
    proc, port, key = bs.start_torchserve(ts_path, work, 2)
    try:
        ts = bs.run_load(port, "/predictions/mlp", ts_body, {"Authorization": f"Bearer {key}"}, 32, n, secs)
    finally:
        bs.stop(proc)
    ratio = mk["rps"] / ts["rps"]
    return [Row("serving throughput at concurrency 32 (MLP, 1-row JSON)", ">= 3x TorchServe, p99 reported",
                f"{ratio:.1f}x: modelkit {mk['rps']:.0f} req/s (p50 {mk['p50']:.1f} ms, p99 {mk['p99']:.1f} ms, "
                f"{mk['errors']} errors) vs TorchServe {ts['rps']:.0f} req/s (p50 {ts['p50']:.1f} ms, p99 "
                f"{ts['p99']:.1f} ms, {ts['errors']} errors)", holds(ratio, ">=", 3.0))]


IMPORT_LOAD = """
import sys, time
t0 = time.perf_counter()
import modelkit.runtime
m = modelkit.runtime.load(sys.argv[1])
t1 = time.perf_counter()
heavy = [k for k in ("tensorflow", "torch", "jax", "keras") if k in sys.modules]
print(t1 - t0, ",".join(heavy))
"""


def fig_footprint(paths: dict[str, Path], quick: bool) -> list[Row]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    times, heavy = [], set()
    for _ in range(5 if quick else 11):
        out = subprocess.run([sys.executable, "-c", IMPORT_LOAD, str(paths["cnn.onnx"])], env=env, check=True,
                             capture_output=True, text=True).stdout.split()
        times.append(float(out[0]))
        heavy.update(x for x in (out[1:] or [""])[0].split(",") if x)
    t = float(np.median(times))
    rows = [Row("import modelkit.runtime + load ONNX (fresh interpreter)", "<= 0.5 s",
                f"{t:.3f} s (median of {len(times)}){'; imported ' + ', '.join(sorted(heavy)) if heavy else ''}",
                holds(t, "<=", 0.5) if not heavy else False)]
    size = install_size()
    rows.append(Row("install size of modelkit[onnx] dependencies", "<= 100 MB",
                    f"{size:.0f} MB ({', '.join(pinned(ROOT / 'pyproject.toml', ONNX_EXTRA))}; site-packages of a "
                    f"fresh venv, pip itself excluded)" if size is not None else "fresh venv could not be built",
                    holds(size, "<=", 100.0)))
    return rows


def install_size(venv: Path = FOOTPRINT_VENV) -> float | None:
    """MB of a fresh venv's site-packages with only modelkit[onnx]'s pinned dependencies (pip and its own
    bootstrap packages excluded); the venv is built once and reused."""
    site = next(iter(venv.glob("lib/python*/site-packages")), None)
    marker = venv / ".modelkit-footprint"
    if site is None or not marker.exists():
        try:
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
            subprocess.run([str(venv / "bin" / "pip"), "install", "-q",
                            *pinned(ROOT / "pyproject.toml", ONNX_EXTRA)], check=True)
        except (subprocess.CalledProcessError, OSError) as exc:
            _log(f"footprint venv failed: {exc}")
            return None
        marker.write_text("ok\n")
        site = next(iter(venv.glob("lib/python*/site-packages")))
    bootstrap = sum(dir_size_mb(p) for p in site.iterdir() if p.name.startswith(BOOTSTRAP))
    return dir_size_mb(site) - bootstrap


# ------------------------------------------------------------------------------------------ main

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(os.environ.get("BENCH_OUT", "bench-out")) / "targets"))
    ap.add_argument("--quick", action="store_true", help="short loops (same figures, more noise)")
    ap.add_argument("--tvm-budget", default="20m", help="MetaSchedule budget for the TVM figure (cached)")
    ap.add_argument("--image-size", type=int, default=224, help="MobileNetV2 input size")
    ap.add_argument("--only", default=",".join(FIGURES), help=f"comma-separated subset of {','.join(FIGURES)}")
    args = ap.parse_args(argv)
    for k, v in {"TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "0", "PYTHONWARNINGS": "ignore"}.items():
        os.environ.setdefault(k, v)
    figures = {f.strip() for f in args.only.split(",") if f.strip()}
    unknown = figures - set(FIGURES)
    if unknown:
        ap.error(f"unknown figures {sorted(unknown)}; valid: {', '.join(FIGURES)}")
    out = Path(args.out)
    paths = prepare(out / "models", args.image_size)
    lib = out / "tvm" / f"{paths['mnet.onnx'].stem}.tuned.tvm.so"
    if lib.exists():
        paths["mnet.tvm"] = lib
    rows: list[Row] = []
    steps: list[tuple[str, Callable[[], list[Row]]]] = [
        ("tvm", lambda: fig_tvm(paths, out, args.tvm_budget, args.quick)),
        ("overhead", lambda: fig_overhead(paths, args.quick)),
        ("speedup", lambda: fig_speedup_roofline(paths, args.quick, figures)),
        ("int8", lambda: fig_int8(paths, args.quick)),
        ("conversion", lambda: fig_conversion(paths, out, args.quick)),
        ("serving", lambda: fig_serving(args.quick)),
        ("footprint", lambda: fig_footprint(paths, args.quick)),
    ]
    for name, step in steps:
        if name not in figures and not (name == "speedup" and "roofline" in figures):
            continue
        _log(f"measuring {name}")
        try:
            new = step()
        except Exception as exc:  # noqa: BLE001 - one failing figure must not hide the others; it is reported
            new = [Row(name, "-", f"failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                       None)]
        for r in new:
            print(f"{r.figure}: target {r.target}; measured {r.measured}; holds "
                  f"{ {True: 'yes', False: 'no', None: 'n/a'}[r.holds] }", flush=True)
        rows += new
    print("\n" + markdown_table(rows))
    (out / "targets.json").write_text(json.dumps([asdict(r) for r in rows], indent=1) + "\n")
    (out / "targets.md").write_text(markdown_table(rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
