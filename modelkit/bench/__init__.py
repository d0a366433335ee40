"""One benchmark harness for every engine: `run_bench(artifacts)` -> a result document (schema.json).

    stats.py     timing loops and statistics (percentiles, spread, throughput), clock injectable
    worker.py    the child-process side: load one artifact, time it at each batch size
    child.py     runs a worker in a fresh process, relaying its progress lines
    runner.py    plans jobs (artifacts + Keras baselines), runs them, adds FLOPs, roofline and ratios
    flops.py     FLOPs from an ONNX graph;  roofline.py  the machine's estimated peak fp32 GFLOP/s
    report.py    terminal table, CSV, HTML;  plots.py  matplotlib (Agg) figures for the HTML report
"""
from __future__ import annotations

from pathlib import Path

from .runner import SCHEMA_ID, run_bench

SCHEMA_PATH = Path(__file__).with_name("schema.json")

__all__ = ["run_bench", "SCHEMA_ID", "SCHEMA_PATH"]
