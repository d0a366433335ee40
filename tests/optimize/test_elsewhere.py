"""optimize for another machine's target (edge-arm64): candidates built and gated here, marked 'not measured here',
the smallest within the accuracy and size limits chosen, and the decision saying no latency was measured."""
from __future__ import annotations

import numpy as np
import pytest

import modelkit
from modelkit import manifest as _manifest
from modelkit.errors import OptimizeError
from modelkit.optimization import elsewhere


def _cand(key: str, size: int, quantize: str | None = None, drop: float | None = 0.0) -> dict:
    return {"key": key, "build": key, "quantize": quantize, "status": elsewhere.NOT_HERE, "size_bytes": size,
            "accuracy_drop": drop}


def test_the_smallest_within_the_limits_is_chosen_and_an_exact_one_first_among_equals():
    limits = {"max_accuracy_drop": 0.01, "max_size_mb": None}
    cands = [_cand("fp32", 4000), _cand("int8", 1000, "int8", 0.002), _cand("bad", 500, "int8", 0.05),
             _cand("same", 1000), {"key": "x", "status": "failed", "reason": "boom"}]
    d = elsewhere.choose(cands, limits, "edge-arm64")
    assert d["winner"] == "same" and d["why"].startswith("same chosen by size, latency not measured")
    assert d["rejected"]["bad"] == ["accuracy drop 0.0500 > 0.0100"] and d["rejected"]["x"] == ["failed: boom"]
    d = elsewhere.choose(cands[:3], {"max_accuracy_drop": 0.01, "max_size_mb": 0.002}, "edge-arm64")
    assert d["winner"] == "int8"
    with pytest.raises(OptimizeError, match=r"no candidate for edge-arm64 meets the limits .*size 0.00381 MB"):
        elsewhere.choose([_cand("fp32", 4000)], {"max_accuracy_drop": 0.01, "max_size_mb": 0.001}, "edge-arm64")
    with pytest.raises(OptimizeError, match="no labelled data to gate accuracy"):
        elsewhere.choose([_cand("int8", 10, "int8", None)], limits, "edge-arm64")
    with pytest.raises(OptimizeError, match="--max-p99-ms cannot be checked for edge-arm64"):
        elsewhere.check_limits("edge-arm64", {"max_p99_ms": 2.0})


@pytest.mark.slow
def test_edge_arm64_builds_gates_and_chooses_without_measuring(cnn_tf, tmp_path):
    from modelkit.core import data as _data

    ds = _data.load("digits", seed=0)
    np.savez(tmp_path / "test.npz", x=ds.x_test, y=ds.y_test)
    res = modelkit.optimize(cnn_tf, target="edge-arm64", data=tmp_path / "test.npz", formats="tflite",
                            precisions="fp32,int8", budget="3m", cache_dir=tmp_path / "c", out=tmp_path / "arm")
    by_key = {c["key"]: c for c in res.candidates}
    assert set(by_key) == {"tflite-fp32", "tflite-int8"}  # one per build: threads are the device's; no Keras row
    assert all(c["status"] == "not measured here" and c.get("p50_ms") is None for c in res.candidates)
    assert res.winner["key"] == "tflite-int8" and by_key["tflite-int8"]["accuracy_drop"] <= 0.01
    assert by_key["tflite-int8"]["size_bytes"] < by_key["tflite-fp32"]["size_bytes"]
    m = _manifest.read(res.path)
    assert m.extra["optimize"]["statistic"].startswith("size") and "latency not measured" in m.extra["optimize"]["why"]
    assert modelkit.load(res.path).predict(ds.x_test[:3].astype(np.float32))["probs"].shape == (3, 10)
