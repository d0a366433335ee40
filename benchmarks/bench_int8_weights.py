"""What 7-bit int8 weights cost: modelkit quantizes weights with 7 bits (onnxruntime's reduce_range, NNCF's
overflow fix in every layer) so that its int8 artifacts keep their accuracy on x86 CPUs without VNNI, where
u8 x s8 products saturate in 16 bits. This measures the same trained model quantized both ways, side by side in
one process, on the CPU at hand: speed (8-bit vs 7-bit, and each vs its fp32) and test accuracy.

    python benchmarks/bench_int8_weights.py [--folder bench-out/peers] [--batch 1,32] [--rounds 9]
                                            [--round-seconds 0.3] [--threads 1]

The model is benchmarks/peers.py's MobileNetV2 1.0 trained on the digits at 64x64 (trained and converted there
on first use, cached in --folder); both variants of each engine go through modelkit's own quantizer with the
same calibration samples, only the weight bits differ. Timing: interleaved rounds, medians, ratios taken round
by round (benchmarks/perf_targets.py). Numbers are printed, never asserted.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import peers  # noqa: E402
from benchmarks.perf_targets import median_ratio, sized_rounds  # noqa: E402


def cpu_flags() -> str:
    """The int8-relevant instruction sets this CPU has (from /proc/cpuinfo; '' where it cannot be read)."""
    try:
        flags = next(ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")).split()
    except (OSError, StopIteration):
        return ""
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8")
    return " ".join(f for f in wanted if f in flags) or "none of " + ", ".join(wanted)


def variants(onnx_path: Path, calib: np.ndarray, folder: Path, threads: int) -> dict[str, Callable[[np.ndarray], Any]]:
    """fp32, 7-bit and 8-bit int8 of one ONNX model on onnxruntime and on OpenVINO (f32 pinned for the float
    parts, as modelkit's engine runs an int8 IR), each a function of a batch returning the first output."""
    import onnxruntime as ort
    import openvino as ov

    from modelkit.converters.onnx_openvino import nncf_quantized
    from modelkit.converters.quantize import quantize_onnx
    from modelkit.runtime.openvino import config_for

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    name = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"]).get_inputs()[0].name
    feeds = {name: calib}
    fns: dict[str, Callable[[np.ndarray], Any]] = {}
    onnx_files = {"onnxruntime fp32": onnx_path}
    for bits, seven in (("7-bit", True), ("8-bit", False)):
        dest = folder / f"int8_{bits}.onnx"
        peers._log(f"quantizing {onnx_path.name} for onnxruntime, {bits} weights")
        quantize_onnx(onnx_path, dest, "int8", feeds, seven_bit_weights=seven)
        onnx_files[f"onnxruntime int8 {bits}"] = dest
    for row, path in onnx_files.items():
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        fns[row] = lambda x, s=sess: s.run(None, {name: x})[0]
    core = ov.Core()
    models = {"openvino fp32": core.read_model(str(onnx_path))}
    for bits, seven in (("7-bit", True), ("8-bit", False)):
        peers._log(f"quantizing {onnx_path.name} with NNCF, {bits} weights")
        models[f"openvino int8 {bits}"] = nncf_quantized(core.read_model(str(onnx_path)), feeds, onnx_path.name,
                                                         seven_bit_weights=seven)
    for row, model in models.items():
        compiled = core.compile_model(model, "CPU", config_for("f32", "latency", threads))
        fns[row] = lambda x, c=compiled: c(x)[0]
    return fns


def report(fns: dict[str, Callable[[np.ndarray], Any]], x: np.ndarray, test: tuple[np.ndarray, np.ndarray],
           rounds: int, round_seconds: float) -> list[str]:
    """Markdown rows: p50, 8-bit / 7-bit time, each int8's speed-up over its engine's fp32, test accuracy."""
    t = sized_rounds({k: (lambda f=f: f(x)) for k, f in fns.items()}, rounds, round_seconds)
    lines = ["| row | p50 ms | speed-up over its fp32 | test accuracy |", "| --- | --- | --- | --- |"]
    for row, f in fns.items():
        fp32 = row.split(" ")[0] + " fp32"
        lines.append(f"| {row} | {np.median(t[row]) * 1e3:.3f} | {median_ratio(t[fp32], t[row]):.2f}x | "
                     f"{peers.accuracy(f, *test):.4f} |")
    lines.append("")
    for engine in ("onnxruntime", "openvino"):
        r = median_ratio(t[f"{engine} int8 8-bit"], t[f"{engine} int8 7-bit"])
        verdict = "the same within 3 %" if abs(r - 1) < 0.03 else "7-bit faster" if r > 1 else "8-bit faster"
        lines.append(f"- {engine}: 8-bit weights take {r:.2f}x the time of 7-bit ({verdict})")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folder", default=str(Path(os.environ.get("BENCH_OUT", "bench-out")) / "peers"))
    ap.add_argument("--batch", default="1,32")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--round-seconds", type=float, default=0.3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--trained-size", type=int, default=64)
    args = ap.parse_args(argv)
    folder = Path(args.folder)
    arts = peers.prepare(folder, 224, args.trained_size, ["mnet-digits"])["mnet-digits"]
    calib_file, _ = peers._digits_files(folder, args.trained_size)
    with np.load(calib_file) as z:
        calib = z["x"]
    test = peers.test_set("mnet-digits", arts, args.trained_size)
    assert test is not None
    print(f"# int8 weights: 7-bit (modelkit) vs 8-bit, MobileNetV2 1.0 {args.trained_size} trained on the digits\n\n"
          f"CPU: {cpu_flags()}; {args.threads} thread(s) per engine, {args.rounds} interleaved rounds\n")
    with tempfile.TemporaryDirectory() as tmp:
        fns = variants(arts["onnx"], calib, Path(tmp), args.threads)
        for batch in (int(b) for b in args.batch.split(",")):
            print(f"\n## batch {batch}\n")
            print("\n".join(report(fns, test[0][:batch], test, args.rounds, args.round_seconds)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
