"""`modelkit optimize`'s winner against the artifact a user would pick by hand from benchmarks/peers.py.

    python benchmarks/bench_optimize.py [--out bench-out/optimize] [--models cnn,mnet-digits] [--batch 1]
                                        [--budget 10m] [--threads 1] [--rounds 7]

For each model (the digits CNN; MobileNetV2 1.0 trained on the digits at 64 px, as peers.py builds them):
1. the hand pick: every modelkit artifact peers.py converts (ONNX, TFLite, TorchScript, OpenVINO, ExecuTorch, and
   the int8 / bf16 ones its accuracy gate passed) measured side by side at the batch; the fastest whose test
   accuracy is within 0.01 of the best exact one's is what a reader of its table would ship;
2. `modelkit.optimize(model, data=digits test split, max_accuracy_drop=0.01, budget=...)`: its winner;
3. both loaded in this process and timed side by side in interleaved rounds (perf_targets.side_by_side): the
   ratio winner / hand pick is the median of the per-round ratios. Goal of issue 21: <= 1.0x, within the
   accuracy limit. Numbers are printed and written to bench_optimize.json, never asserted.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import peers  # noqa: E402
from benchmarks.perf_targets import median_ratio, side_by_side  # noqa: E402


def _log(msg: str) -> None:
    print(f"[bench_optimize] {msg}", file=sys.stderr, flush=True)


def hand_pick(arts: dict[str, Path], x: np.ndarray, test: tuple[np.ndarray, np.ndarray], threads: int,
              rounds: int) -> dict[str, Any]:
    """The fastest modelkit artifact of peers.py's table within 0.01 of the best exact accuracy."""
    rows = peers.modelkit_rows(arts, threads)
    rows["onnxruntime (raw)"] = peers.raw_ort_row(arts, threads)  # peers.measure's reference
    results = [r for r in peers.measure(rows, x, rounds, 0.3, test) if r["row"].startswith("modelkit ")]
    best_exact = max(r["accuracy"] for r in results if r["exact"])
    ok = [r for r in results if r["accuracy"] >= best_exact - 0.01]
    pick = min(ok, key=lambda r: r["p50_ms"])
    key = pick["row"][len("modelkit "):]
    return {"row": pick["row"], "path": str(arts[key]), "p50_ms": pick["p50_ms"], "accuracy": pick["accuracy"],
            "best_exact_accuracy": best_exact, "table": results}


def _test_file(folder: Path, key: str, test: tuple[np.ndarray, np.ndarray]) -> Path:
    path = folder / f"{key}_test_split.npz"
    if not path.exists():
        np.savez(path, x=test[0], y=test[1])
    return path


def head_to_head(winner: dict[str, Any], pick: dict[str, Any], x: np.ndarray, threads: int,
                 rounds: int) -> dict[str, Any]:
    """Both artifacts loaded here, timed side by side; the winner at the threads it was chosen with."""
    import modelkit

    calls = {}
    for name, path, t in (("optimize", winner["path"], winner.get("threads") or threads),
                          ("hand", pick["path"], threads)):
        m = modelkit.load(path, threads=t, verbose=False)
        calls[name] = (lambda m=m: m.predict(x))
    t = side_by_side(calls, rounds, 200)
    return {"optimize_p50_ms": float(np.median(t["optimize"])) * 1e3,
            "hand_p50_ms": float(np.median(t["hand"])) * 1e3, "ratio": median_ratio(t["optimize"], t["hand"])}


def run_model(key: str, folder: Path, batch: int, budget: str, threads: int, rounds: int) -> dict[str, Any]:
    import modelkit

    arts = peers.prepare(folder / "models", 224, 64, [key])[key]
    test = peers.test_set(key, arts, 64)
    assert test is not None
    x = np.ascontiguousarray(np.resize(test[0][:batch], (batch, *test[0].shape[1:])).astype(np.float32))
    _log(f"{key}: measuring peers.py's modelkit artifacts at batch {batch} for the hand pick")
    pick = hand_pick(arts, x, test, threads, rounds)
    _log(f"{key}: hand pick {pick['row']} ({pick['p50_ms']:.3g} ms); running modelkit optimize (budget {budget})")
    t0 = time.monotonic()
    res = modelkit.optimize(arts["keras"], data=_test_file(folder, key, test), batch=batch, budget=budget,
                            out=folder / f"{key}_optimized_b{batch}", force=True, cache_dir=folder / "cache",
                            rounds=rounds)
    winner = {**res.winner, "path": res.path}
    h2h = head_to_head(winner, pick, x, threads, rounds)
    drop = res.winner.get("accuracy_drop")
    return {"model": key, "batch": batch, "winner": res.winner["key"], "winner_accuracy_drop": drop,
            "why": res.decision.get("why"), "hand_pick": pick["row"], "hand_accuracy": pick["accuracy"],
            "hand_drop": pick["best_exact_accuracy"] - pick["accuracy"], **h2h,
            "same_choice": _same(res.winner, pick["row"], threads),
            "goal_met": h2h["ratio"] <= 1.0 and drop is not None and drop <= 0.01,
            "optimize_s": round(time.monotonic() - t0, 1)}


def _same(winner: dict[str, Any], row: str, threads: int) -> bool:
    """Whether optimize chose what the hand pick is: 'modelkit tflite int8' at `threads` = tflite-int8-t1."""
    parts = row.split()[1:]
    fmt, mode = parts[0], (parts[1] if len(parts) > 1 else None)
    return winner["format"] == fmt and winner.get("quantize") == mode and winner.get("threads") == threads


def _verdict(r: dict[str, Any]) -> str:
    if r["goal_met"]:
        return "met"
    if r["same_choice"] and r["ratio"] <= 1.02:
        return "the same choice as the hand pick, equal within noise"
    return "missed"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(os.environ.get("BENCH_OUT", "bench-out")) / "optimize"))
    ap.add_argument("--models", default="cnn,mnet-digits")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--budget", default="10m")
    ap.add_argument("--threads", type=int, default=1, help="threads of the hand pick (peers.py's default: 1)")
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for key in [m for m in args.models.split(",") if m]:
        r = run_model(key, out, args.batch, args.budget, args.threads, args.rounds)
        results.append(r)
        print(f"{key} b={args.batch}: optimize -> {r['winner']} (accuracy drop {r['winner_accuracy_drop']:+.4f}, "
              f"{r['optimize_s']:.0f} s); hand pick from peers.py -> {r['hand_pick']} (drop {r['hand_drop']:.4f}); "
              f"side by side {r['optimize_p50_ms']:.3g} vs {r['hand_p50_ms']:.3g} ms = {r['ratio']:.3f}x "
              f"(goal <= 1.0x: {_verdict(r)})", flush=True)
    (out / "bench_optimize.json").write_text(json.dumps(results, indent=1, default=str))
    _log(f"wrote {out / 'bench_optimize.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
