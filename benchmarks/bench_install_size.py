"""Installed size of each runtime-only extra against numpy + its engine alone (goal: at most 1.1x), and of the
converter extra `modelkit[onnx]` for contrast.

    python benchmarks/bench_install_size.py [--out bench-out] [--strict]

An extra's size is the sum of the files (their RECORD) of every distribution `pip install 'modelkit[EXTRA]'`
resolves to: the core dependencies, the extra's own and everything they require, read from pyproject.toml and
this environment's installed metadata (tests/helpers/extras.py; nothing is downloaded, modelkit's own few hundred
KB are left out). The baseline is numpy + the extra's own packages and what they require. Writes
bench_install_size.json; --strict exits 1 when an extra misses the goal.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.helpers.extras import MissingDistribution, installed_bytes, mb, requirements, resolve  # noqa: E402

RUNTIME_ONLY = ["run-onnx", "run-tflite", "run-torch", "run-tvm"]
CONTRAST = {"onnx": "run-onnx"}  # the converter extra (it brings onnxruntime too) against run-onnx's baseline
GOAL = 1.1


def measure(extra: str, baseline: str | None = None) -> dict:
    """Sizes (bytes) of modelkit[extra] and of numpy + the own requirements of `baseline` (default: the extra),
    and the distributions."""
    full = resolve(requirements(extra))
    base = resolve(["numpy", *requirements(baseline or extra, core=False)])
    size, alone = installed_bytes(full.values()), installed_bytes(base.values())
    return {"extra": extra, "baseline": baseline or extra, "bytes": size, "baseline_bytes": alone,
            "ratio": size / alone, "added": sorted(set(full) - set(base)), "distributions": sorted(full)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.environ.get("BENCH_OUT", "bench-out"))
    ap.add_argument("--strict", action="store_true", help=f"exit 1 when a runtime-only extra is over {GOAL}x")
    args = ap.parse_args()
    rows, missing = [], []
    for extra, baseline in [*((e, None) for e in RUNTIME_ONLY), *CONTRAST.items()]:
        try:
            rows.append(measure(extra, baseline))
        except MissingDistribution as exc:
            missing.append(f"{extra}: {exc}")
    print(f"| extra | installed | numpy + engine alone | ratio | goal <= {GOAL}x | added to numpy + engine |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        if r["extra"] in RUNTIME_ONLY:
            goal = "met" if r["ratio"] <= GOAL else "MISSED"
        else:
            goal = f"converters: vs {r['baseline']}'s numpy + engine"
        added = ", ".join(r["added"]) if len(r["added"]) <= 12 else f"{len(r['added'])} distributions"
        print(f"| {r['extra']} | {mb(r['bytes'])} | {mb(r['baseline_bytes'])} | {r['ratio']:.3f}x | {goal} | "
              f"{mb(r['bytes'] - r['baseline_bytes'])}: {added or '-'} |")
    for line in missing:
        print(f"not measured (not installed here): {line}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_install_size.json").write_text(json.dumps({"goal": GOAL, "rows": rows, "missing": missing},
                                                            indent=1) + "\n")
    print(f"\nwrote {out / 'bench_install_size.json'}")
    over = [r["extra"] for r in rows if r["extra"] in RUNTIME_ONLY and r["ratio"] > GOAL]
    return 1 if args.strict and over else 0


if __name__ == "__main__":
    sys.exit(main())
