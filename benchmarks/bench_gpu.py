"""server-gpu, built here and run there: TVM CUDA libraries, TorchScript and onnxruntime on an NVIDIA GPU.

    python benchmarks/bench_gpu.py prepare [--out bench-out/gpu] [--image-size 224] [--batches 1,32]
    python benchmarks/bench_gpu.py run     [--out bench-out/gpu] [--duration 2s]

`prepare` runs on a build host with modelkit[tvm,torch] (no GPU or CUDA toolkit needed): it trains (or reuses) the
digits CNN and MobileNetV2 of bench_formats and a masked LSTM, converts each to ONNX, TorchScript and .pt2, compiles a
server-gpu library per batch (server-gpu compiles a fixed batch), and saves seeded inputs with onnxruntime's CPU outputs
as the exact reference (`reference.npz`). `run` runs on the GPU server, which needs only modelkit's runtime,
TVM's runtime (the PyPI wheel's libtvm_runtime_cuda.so; TVM_USE_RUNTIME_LIB=1 works), a CUDA compiler for
the kernels the libraries carry as source (nvcc, or NVRTC with full TVM: docs/tvm.md) and, for the torch
rows, torch with CUDA: every artifact is loaded with device="cuda" (and the ONNX model on the CPU), checked
against the reference (max abs difference) and timed in this one process, interleaved rounds, medians and
ratios vs onnxruntime on the CPU printed; `gpu.json` in --out holds the table. `run` records prepare's libraries
in this machine's trust store (modelkit.trust.record_library: native code this user vouches for). Nothing is
asserted: rows that cannot run say why.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

import modelkit  # noqa: E402
from modelkit.bench.stats import parse_duration, time_calls  # noqa: E402


def _sources(out: Path, image_size: int) -> list[tuple[str, Path, Path | None]]:
    """(name, ONNX model, TorchScript file or None): tests' tiny ONNX model (what tests/targets/test_gpu.py
    loads from MODELKIT_GPU_PREBUILT), the digits CNN, MobileNetV2 and a masked LSTM (TVM runs it through
    modelkit's RNN lowering)."""
    from benchmarks.bench_formats import sources
    from tests.helpers.models import make_masked_lstm, make_tiny_onnx

    found = [("tiny", make_tiny_onnx(out / "tiny.onnx"), None)]
    lstm = out / "lstm.keras"
    if not lstm.exists():
        make_masked_lstm(lstm, units=32, classes=10)
    for src in [*sources(out, image_size), lstm]:
        name = src.name[: -len(".keras")]
        onnx_path, ts_path = out / f"{name}.onnx", out / f"{name}.torchscript.pt"
        for fmt, path in (("onnx", onnx_path), ("torchscript", ts_path), ("pt2", out / f"{name}.pt2")):
            if not path.exists():
                modelkit.convert(src, fmt, out_dir=out, force=True)
        found.append((name, onnx_path, ts_path))
    return found


def prepare(out: Path, image_size: int, batches: list[int]) -> None:
    """Build every artifact `run` loads, and the reference outputs, into out."""
    out.mkdir(parents=True, exist_ok=True)
    plan: dict[str, dict] = {}
    ref: dict[str, np.ndarray] = {}
    rng = np.random.default_rng(0)
    for name, onnx_path, ts_path in _sources(out, image_size):
        cpu = modelkit.load(onnx_path)
        (inp,) = cpu.signature.inputs
        entry = {"onnx": onnx_path.name, "torchscript": ts_path and ts_path.name, "input": inp.name, "libs": {}}
        for b in batches:
            lib = out / (f"{name}.server-gpu.tvm.so" if name == "tiny" else f"{name}.b{b}.server-gpu.tvm.so")
            if not lib.exists():
                print(f"compiling {name} for server-gpu at batch {b}", file=sys.stderr, flush=True)
                modelkit.compile(onnx_path, "server-gpu", out=lib, batch=None if name == "tiny" else b)
            entry["libs"][str(b)] = lib.name
            shape = [b] + [int(d) for d in inp.shape[1:]]
            x = rng.random(shape).astype(inp.dtype)
            ref[f"{name}/b{b}/x"] = x
            for key, value in cpu.predict({inp.name: x}).items():
                ref[f"{name}/b{b}/{key}"] = value
            if name == "tiny":
                break  # one library, compiled as test_gpu.py compiles it
        plan[name] = entry
    np.savez(out / "reference.npz", **ref)
    (out / "plan.json").write_text(json.dumps(plan, indent=2))
    print(f"prepared {out}: {', '.join(plan)}", file=sys.stderr)


def _engines(out: Path, name: str, entry: dict, batch: int) -> dict[str, object]:
    """label -> a loaded model, or the one-line reason it could not load here."""
    found: dict[str, object] = {}
    choices = [("onnxruntime cpu", out / entry["onnx"], "cpu"),
               ("onnxruntime cuda", out / entry["onnx"], "cuda"),
               ("tvm server-gpu", out / entry["libs"][str(batch)], "cuda"),
               ("torchscript cuda", entry["torchscript"] and out / entry["torchscript"], "cuda"),
               ("pt2 cuda", entry["torchscript"] and out / entry["torchscript"].replace(".torchscript.pt", ".pt2"),
                "cuda")]
    for label, path, device in choices:
        if path is None:
            continue
        try:
            found[label] = modelkit.load(path, device=device)
        except Exception as exc:  # noqa: BLE001 - a row that cannot run says why
            found[label] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:160]
    return found


def run(out: Path, duration: float, rounds: int = 3) -> list[dict]:
    """Check and time every artifact of out's plan on this machine's GPU; print and return the rows."""
    from modelkit import trust

    plan = json.loads((out / "plan.json").read_text())
    ref = np.load(out / "reference.npz")
    for entry in plan.values():  # built by `prepare` on the build host: vouched for, as docs/reliability.md says
        for lib in entry["libs"].values():
            trust.record_library(out / lib)
    rows: list[dict] = []
    for name, entry in plan.items():
        for b in map(int, entry["libs"]):
            x = {entry["input"]: ref[f"{name}/b{b}/x"]}
            want = {k.split("/")[-1]: ref[k] for k in ref.files if k.startswith(f"{name}/b{b}/") and k[-2:] != "/x"}
            engines = _engines(out, name, entry, b)
            times: dict[str, list[float]] = {k: [] for k, m in engines.items() if not isinstance(m, str)}
            diffs: dict[str, float] = {}
            for label in list(times):
                try:
                    got = engines[label].predict(x)
                    diffs[label] = max(float(np.max(np.abs(got[k] - want[k]))) for k in want)
                except Exception as exc:  # noqa: BLE001
                    engines[label] = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"[:160]
                    del times[label]
            for _ in range(rounds):  # interleaved: each engine once per round
                for label in times:
                    times[label] += time_calls(lambda m=engines[label], x=x: m.predict(x), duration=duration / rounds,
                                               warmup=3)
            base = float(np.median(times["onnxruntime cpu"])) if "onnxruntime cpu" in times else None
            for label, m in engines.items():
                row = {"model": name, "batch": b, "engine": label}
                if label in times:
                    p50 = float(np.median(times[label]))
                    row.update(p50_ms=p50 * 1e3, vs_ort_cpu=(p50 / base) if base else None, max_abs_diff=diffs[label])
                else:
                    row["not_run"] = m
                rows.append(row)
    _print(rows)
    (out / "gpu.json").write_text(json.dumps({"machine": platform.node(), "rows": rows}, indent=2))
    return rows


def _print(rows: list[dict]) -> None:
    from modelkit._text import table

    print(table(["model", "b", "engine", "p50 ms", "vs ORT cpu", "max abs diff"],
                [[r["model"], r["batch"], r["engine"], f"{r['p50_ms']:.3f}",
                  f"{r['vs_ort_cpu']:.2f}x" if r["vs_ort_cpu"] else "-", f"{r['max_abs_diff']:.1e}"]
                 if "p50_ms" in r else [r["model"], r["batch"], r["engine"], "-", "-", f"not run: {r['not_run']}"]
                 for r in rows]))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("step", choices=("prepare", "run"))
    ap.add_argument("--out", type=Path, default=ROOT / "bench-out" / "gpu")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--duration", default="2s", help="timed calls per engine and case, over all rounds")
    args = ap.parse_args(argv)
    if args.step == "prepare":
        prepare(args.out, args.image_size, [int(b) for b in args.batches.split(",")])
    else:
        run(args.out, parse_duration(args.duration))


if __name__ == "__main__":
    main()
