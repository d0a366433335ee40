"""The budget of `modelkit optimize` bounds the builds: what it does not reach is skipped with the reason."""
from __future__ import annotations

import pytest

import modelkit
from modelkit.errors import OptimizeError


def test_a_budget_that_leaves_no_time_to_build_skips_every_build_and_says_so(cnn_tf, tmp_path):
    """20 s is all kept for measuring (a quarter of the budget, at least 20 s): no build starts, none is half-done,
    the error names the budget and --out is not written."""
    with pytest.raises(OptimizeError, match=r"no candidate was measured .*the budget ran out before it was built"):
        modelkit.optimize(cnn_tf, budget="20s", formats="onnx,tflite", threads=(1,), rounds=1,
                          cache_dir=tmp_path / "cache", out=tmp_path / "out")
    assert not (tmp_path / "out").exists()
    builds = next((tmp_path / "cache" / "builds").iterdir())
    assert not list(builds.glob("*.onnx")) and not list(builds.glob("*.tflite"))
