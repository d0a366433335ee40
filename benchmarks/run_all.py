"""`make bench`: run every benchmarks/bench_*.py script and index their reports in bench-out/.

Each script runs in its own process with BENCH_OUT set to the output folder; a failing script is
reported and the others still run. Last, benchmarks/perf_targets.py prints the performance-target table
(BENCH_QUICK=1 adds --quick; BENCH_TVM_BUDGET sets --tvm-budget, default 20m, cached after the first
run). Exit code 1 if any script failed.
"""
from __future__ import annotations

import html
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    out = Path(os.environ.get("BENCH_OUT", ROOT / "bench-out")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "BENCH_OUT": str(out), "PYTHONPATH": str(ROOT)}
    summary = []
    targets_args = ["--tvm-budget", os.environ.get("BENCH_TVM_BUDGET", "20m")]
    if os.environ.get("BENCH_QUICK") == "1":
        targets_args.append("--quick")
    runs = [(s, []) for s in sorted((ROOT / "benchmarks").glob("bench_*.py"))]
    runs.append((ROOT / "benchmarks" / "peers.py", []))  # modelkit vs the engines called by hand (README table)
    runs.append((ROOT / "benchmarks" / "perf_targets.py", targets_args))
    for script, extra in runs:
        print(f"=== {script.name}", flush=True)
        t0 = time.perf_counter()
        code = subprocess.call([sys.executable, str(script), *extra], cwd=ROOT, env=env)
        summary.append((script.name, code, time.perf_counter() - t0))
    reports = sorted(p.name for p in out.glob("*.html") if p.name != "index.html")
    items = "".join(f'<li><a href="{html.escape(r)}">{html.escape(r)}</a></li>' for r in reports)
    runs = "".join(f"<li>{html.escape(n)}: {'ok' if c == 0 else f'FAILED (exit {c})'}, {s:.0f} s</li>"
                   for n, c, s in summary)
    (out / "index.html").write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>modelkit benchmarks"
                                    f"</title></head><body><h1>modelkit benchmarks</h1><ul>{runs}</ul>"
                                    f"<h2>Reports</h2><ul>{items}</ul></body></html>\n")
    print("\n" + "\n".join(f"{n}: {'ok' if c == 0 else f'FAILED (exit {c})'} in {s:.0f} s" for n, c, s in summary))
    print(f"reports: {out / 'index.html'}")
    return 1 if any(c for _, c, _ in summary) else 0


if __name__ == "__main__":
    sys.exit(main())
