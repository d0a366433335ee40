"""Smoke test of benchmarks/perf_targets.py's helpers: pure functions, no models, no timing assertions."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def targets():
    spec = importlib.util.spec_from_file_location("bench_targets", ROOT / "benchmarks" / "perf_targets.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the class is created
    try:
        spec.loader.exec_module(mod)
        yield mod
    finally:
        sys.modules.pop(spec.name, None)


def test_holds(targets):
    assert targets.holds(1.02, "<=", 1.03) is True
    assert targets.holds(1.04, "<=", 1.03) is False
    assert targets.holds(25.0, ">=", 20.0) is True
    assert targets.holds(None, ">=", 20.0) is None
    assert targets.holds(float("nan"), "<=", 1.0) is None
    with pytest.raises(ValueError):
        targets.holds(1.0, "<", 2.0)


def test_side_by_side_and_ratio(targets):
    calls = {"a": 0, "b": 0}

    def a():
        calls["a"] += 1

    def b():
        calls["b"] += 1

    t = targets.side_by_side({"a": a, "b": b}, rounds=3, calls=4, warmup=2)
    assert set(t) == {"a", "b"} and all(len(v) == 3 for v in t.values())
    assert calls == {"a": 14, "b": 14}  # 2 warm-up + 3 rounds x 4
    assert targets.median_ratio([2.0, 4.0, 6.0], [1.0, 2.0, 2.0]) == 2.0


def test_table_and_sizes(targets, tmp_path):
    rows = [targets.Row("f1", "<= 1x", "0.9x", True), targets.Row("f2", ">= 3x", "2x", False),
            targets.Row("f3", "report", "-", None)]
    table = targets.markdown_table(rows)
    assert table.splitlines()[0] == "| figure | target | measured | holds |"
    assert "| f1 | <= 1x | 0.9x | yes |" in table and "**no**" in table and "n/a" in table
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.bin").write_bytes(b"0" * 2_000_000)
    assert targets.dir_size_mb(tmp_path) == pytest.approx(2.0)
    assert targets.fmt_ms(0.0015) == "1.500 ms" and targets.fmt_ms(2.5) == "2.50 s"


def test_pinned_reads_pyproject(targets, tmp_path):
    p = tmp_path / "pyproject.toml"
    p.write_text('dependencies = ["numpy==2.4.6", "click==8.5.1"]\n')
    assert targets.pinned(p, ("numpy", "click")) == ["numpy==2.4.6", "click==8.5.1"]
    with pytest.raises(ValueError):
        targets.pinned(p, ("onnx",))
    assert all("==" in x for x in targets.pinned(ROOT / "pyproject.toml", targets.ONNX_EXTRA))
