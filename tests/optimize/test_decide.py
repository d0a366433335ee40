"""modelkit.optimization.decide: accuracy drops, limits and their messages, the Pareto front, the winner."""
from __future__ import annotations

import pytest

from modelkit.errors import ModelkitError, OptimizeError
from modelkit.optimization.decide import accuracy_drops, check, choose, pareto_front

MB = 2**20


def cand(key, p50, ci=None, p99=None, acc=0.95, size_mb=4.0, quantize=None, status="measured", fmt="onnx", **kw):
    c = {"key": key, "format": fmt, "quantize": quantize, "threads": 2, "engine": "onnxruntime", "path": f"/a/{key}",
         "size_bytes": None if size_mb is None else int(size_mb * MB), "sha256": "0" * 64, "status": status,
         "reason": None, "gate": None}
    if status == "measured":
        c.update({"p50_ms": p50, "ci95_ms": list(ci) if ci else [p50 * 0.98, p50 * 1.02],
                  "p99_ms": p99 if p99 is not None else p50 * 1.5, "accuracy": acc, "rounds_ms": [p50] * 5,
                  "calls": 100, "load_s": 0.1, "batch": 1})
    c.update(kw)
    return c


def baseline(p50=5.0, acc=0.95):
    return cand("keras.predict", p50, fmt="keras", mode="keras.predict", acc=acc, size_mb=1.0)


def test_accuracy_drops_from_the_keras_row_else_the_best_exact():
    cs = [baseline(acc=0.96), cand("a", 1.0, acc=0.95), cand("b", 1.0, acc=0.90, quantize="int8"),
          cand("c", None, status="failed")]
    accuracy_drops(cs)
    assert cs[0]["accuracy_drop"] == 0.0
    assert cs[1]["accuracy_drop"] == pytest.approx(0.01)
    assert cs[2]["accuracy_drop"] == pytest.approx(0.06)
    assert "accuracy_drop" not in cs[3]
    # no Keras row: the best exact candidate's accuracy is the baseline (the lossy 0.99 is not)
    cs = [cand("a", 1.0, acc=0.93), cand("a2", 1.0, acc=0.95), cand("q", 1.0, acc=0.99, quantize="int8")]
    accuracy_drops(cs)
    assert [c["accuracy_drop"] for c in cs] == pytest.approx([0.02, 0.0, -0.04])
    # no labels: every drop is None
    cs = [baseline(acc=None), cand("a", 1.0, acc=None), cand("q", 1.0, acc=None, quantize="int8")]
    accuracy_drops(cs)
    assert [c["accuracy_drop"] for c in cs] == [None, None, None]


def test_check_says_each_limit_missed_with_its_numbers():
    c = cand("q", 2.0, p99=3.10, size_mb=12.4, quantize="int8", accuracy_drop=0.023)
    limits = {"max_accuracy_drop": 0.01, "max_p99_ms": 2.0, "max_size_mb": 10.0}
    assert check(c, limits) == ["accuracy drop 0.0230 > 0.0100", "p99 3.10 ms > 2.00 ms (+55 %)",
                                "size 12.4 MB > 10.0 MB"]
    ok = cand("ok", 1.0, p99=1.9, size_mb=9.9, accuracy_drop=0.009)
    assert check(ok, limits) == []
    # max_accuracy_drop defaults to 0.01; p99 and size are off unless given
    assert check(cand("x", 1.0, p99=99.0, size_mb=999, accuracy_drop=0.011), {}) == ["accuracy drop 0.0110 > 0.0100"]


def test_check_rejects_a_lossy_candidate_without_labels_but_not_an_exact_one():
    lossy = cand("q", 1.0, quantize="dynamic-int8", accuracy_drop=None)
    exact = cand("e", 1.0, accuracy_drop=None)
    assert check(lossy, {"max_accuracy_drop": 0.01}) == ["no labelled data to gate accuracy (--data with y)"]
    assert check(exact, {"max_accuracy_drop": 0.01}) == []


def test_check_on_an_unmeasured_candidate_gives_its_status_and_reason():
    c = cand("tvm", None, status="not measured here", reason="arm64 target, no RPC device")
    assert check(c, {}) == ["not measured here: arm64 target, no RPC device"]


def test_pareto_front_on_a_hand_made_set():
    cs = [cand("fast-big", 1.0, size_mb=8, accuracy_drop=0.0),
          cand("slow-small", 3.0, size_mb=2, accuracy_drop=0.0),
          cand("fast-lossy-small", 0.8, size_mb=1, accuracy_drop=0.02, quantize="int8"),
          cand("dominated", 3.5, size_mb=8, accuracy_drop=0.0),          # by fast-big
          cand("dominated-lossy", 0.9, size_mb=1, accuracy_drop=0.03, quantize="int8"),  # by fast-lossy-small
          cand("equal", 1.0, size_mb=8, accuracy_drop=0.0),              # ties fast-big: neither dominates
          cand("failed", None, status="failed"),
          dict(baseline(p50=0.5), accuracy_drop=0.0, size_bytes=1)]      # would dominate all: not a candidate
    assert pareto_front(cs) == ["fast-lossy-small", "fast-big", "equal", "slow-small"]


def test_winner_is_the_lowest_p50_meeting_the_limits_and_why_has_the_numbers():
    cs = [baseline(p50=6.0), cand("onnx-t1", 2.0, ci=(1.9, 2.1)), cand("onnx-t2", 1.2, ci=(1.15, 1.25)),
          cand("too-slow-p99", 0.9, ci=(0.85, 0.95), p99=5.0)]
    d = choose(cs, {"max_accuracy_drop": 0.01, "max_p99_ms": 3.0})
    assert d["winner"] == "onnx-t2"
    assert d["rejected"] == {"too-slow-p99": ["p99 5.00 ms > 3.00 ms (+67 %)"]}
    assert d["why"].startswith("onnx-t2 won: p50 1.20 ms (95 % CI 1.15-1.25), p99 1.80 ms, accuracy drop 0.0000")
    assert d["why"].endswith("; 5x the speed of Keras predict (6.00 ms).")
    assert d["statistic"] == "p50_ms, median of per-round medians"
    assert set(d["front"]) == {"too-slow-p99"}  # equal drop and size: the fastest dominates the others


def test_exact_candidate_wins_when_its_interval_overlaps_the_fastest_lossy_one():
    cs = [baseline(), cand("int8", 1.00, ci=(0.90, 1.10), quantize="int8", acc=0.945, size_mb=1),
          cand("fp32-big", 1.05, ci=(0.95, 1.15), size_mb=8), cand("fp32-small", 1.08, ci=(1.00, 1.16), size_mb=4),
          cand("fp32-far", 1.5, ci=(1.4, 1.6), size_mb=2)]
    d = choose(cs, {"max_accuracy_drop": 0.01})
    assert d["winner"] == "fp32-small"  # exact and within the noise; then the smaller of the two that overlap
    assert "int8" in d["why"] and "noise" in d["why"] and "exact" in d["why"]


def test_lossy_candidate_wins_when_the_intervals_do_not_overlap():
    cs = [baseline(), cand("int8", 0.60, ci=(0.55, 0.65), quantize="int8", acc=0.945, size_mb=1),
          cand("fp32", 1.05, ci=(0.95, 1.15), size_mb=4)]
    d = choose(cs, {"max_accuracy_drop": 0.01})
    assert d["winner"] == "int8"
    assert "noise" not in d["why"]


def test_baseline_never_wins_even_when_fastest():
    cs = [baseline(p50=0.1), cand("onnx", 1.0)]
    assert choose(cs, {})["winner"] == "onnx"
    with pytest.raises(OptimizeError):
        choose([baseline(p50=0.1)], {})


def test_without_labels_only_exact_candidates_may_win():
    cs = [baseline(acc=None), cand("int8", 0.5, ci=(0.45, 0.55), quantize="int8", acc=None),
          cand("fp32", 1.0, acc=None)]
    d = choose(cs, {"max_accuracy_drop": 0.01})
    assert d["winner"] == "fp32"
    assert d["rejected"] == {"int8": ["no labelled data to gate accuracy (--data with y)"]}


def test_no_candidate_meets_the_limits_raises_listing_the_three_closest_with_numbers():
    cs = [baseline(),
          cand("a", 1.0, p99=2.2),                                  # one miss, +10 %
          cand("b", 1.0, p99=2.6),                                  # one miss, +30 %
          cand("c", 1.0, p99=2.1, size_mb=12.0),                    # two misses
          cand("d", 1.0, p99=2.05, quantize="int8", acc=0.80),      # two misses, the accuracy one large
          cand("e", 1.0, p99=4.0),                                  # one miss, +100 %
          cand("f", None, status="failed", reason="conversion failed")]
    limits = {"max_accuracy_drop": 0.01, "max_p99_ms": 2.0, "max_size_mb": 10.0}
    with pytest.raises(OptimizeError) as info:
        choose(cs, limits)
    exc = info.value
    assert isinstance(exc, ModelkitError)
    msg = str(exc)
    assert "no candidate meets the limits (accuracy drop <= 0.0100, p99 <= 2.00 ms, size <= 10.0 MB)" in msg
    assert "a (p99 2.20 ms > 2.00 ms (+10 %))" in msg
    assert "b (p99 2.60 ms > 2.00 ms (+30 %))" in msg
    assert "e (p99 4.00 ms > 2.00 ms (+100 %))" in msg
    assert "c (" not in msg and "d (" not in msg and "keras.predict" not in msg
    assert [c["key"] for c in exc.report["closest"]] == ["a", "b", "e"]
    assert exc.report["closest"][0]["missed"] == ["p99 2.20 ms > 2.00 ms (+10 %)"]
    assert exc.report["rejected"]["f"] == ["failed: conversion failed"]
    assert exc.report["limits"]["max_size_mb"] == 10.0


def test_nothing_measured_raises_with_the_reasons():
    cs = [cand("x", None, status="failed", reason="onnxruntime missing")]
    with pytest.raises(OptimizeError, match="no candidate was measured .*x: failed: onnxruntime missing"):
        choose(cs, {})


def test_small_sizes_and_limits_are_written_to_three_significant_digits_not_as_zero():
    """A 13 KB model against --max-size-mb 0.001 read 'size 0.0 MB > 0.0 MB' (and every size in the table 0.0)."""
    from modelkit.optimization.report import text_table

    c = cand("a", 1.0, size_mb=13_000 / MB)
    assert check(c, {"max_size_mb": 0.001}) == ["size 0.0124 MB > 0.00100 MB"]
    decision = choose([c, baseline()], {"max_size_mb": 0.5})
    assert "0.0124 MB" in decision["why"] and "size <= 0.500 MB" in decision["why"]
    assert " 0.0124 " in text_table({"candidates": [c], "decision": decision})


def test_the_cli_offers_exactly_the_package_targets_optimize_knows():
    """cli/optimize.py spells its --package choices out (no import of the optimizer on `modelkit --help`)."""
    import click

    from modelkit.cli import main
    from modelkit.optimization.candidates import PACKAGE_FORMATS

    command = main.get_command(click.Context(main), "optimize")
    option = next(p for p in command.params if p.name == "package")
    assert sorted(option.type.choices) == sorted(PACKAGE_FORMATS)
