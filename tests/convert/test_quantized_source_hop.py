"""An exact hop from a quantized artifact (int8 onnx -> tvm, as `--to tvm --quantize int8` plans it) compares two
engines running the same quantized graph: one that requantizes in integers (onnxruntime) rounds some values to the
neighbouring step (1/255 on a softmax output; 3.9e-3 measured on a Conv1D-GRU classifier), so the hop checks the
loose bounds `modelkit verify` applies to a quantized artifact, not the edge's atol 1e-4, which failed it; and the
artifact's manifest keeps the source's quantization (it was None: `modelkit verify` of the int8 .tvm.so judged it at
atol 1e-4 and failed)."""
import pytest

import modelkit
from modelkit import manifest as _manifest
from modelkit.converters.quantize import INT8_TOLERANCE

pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install 'modelkit[openvino]')")


def test_an_exact_hop_from_an_int8_source_takes_the_int8_bounds(tiny_onnx, tmp_path):
    sig = modelkit.load(tiny_onnx).signature
    _manifest.write(tiny_onnx, _manifest.Manifest(format="onnx", signature=sig.to_dict(), quantization="int8"))
    (r,) = modelkit.convert(tiny_onnx, "openvino", out_dir=tmp_path / "q")
    assert r.parity["ok"] and r.parity["tolerance"]["atol"] == INT8_TOLERANCE.atol
    assert r.parity["tolerance"]["min_cosine"] == INT8_TOLERANCE.min_cosine
    # and the artifact says it is int8 (the graph it runs is): verify and inspect take its bounds from that
    assert r.quantization == "int8" and _manifest.read(r.path).quantization == "int8"
    # an --atol given is the user's bar, kept as given
    (r,) = modelkit.convert(tiny_onnx, "openvino", out_dir=tmp_path / "a", atol=1e-3)
    assert r.parity["tolerance"]["atol"] == 1e-3


def test_an_exact_source_keeps_the_edge_s_own_atol(tiny_onnx, tmp_path):
    (r,) = modelkit.convert(tiny_onnx, "openvino", out_dir=tmp_path)
    assert r.parity["ok"] and r.parity["tolerance"]["atol"] == 5e-4
    assert _manifest.read(r.path).quantization == "none"


def _labelled(model_path, tmp_path, flip: int = 0):
    """64 rows of x and labels the tiny model gets right but for the first `flip` (its accuracy: 1 - flip/64)."""
    import numpy as np

    x = np.random.default_rng(3).standard_normal((64, 4)).astype(np.float32)
    y = modelkit.load(model_path).predict(x)["probs"].argmax(1)
    y[:flip] = (y[:flip] + 1) % 3
    np.savez(tmp_path / "eval.npz", x=x, y=y)
    return tmp_path / "eval.npz"


def test_with_labelled_data_the_hop_is_judged_on_the_task_within_what_the_source_left(tiny_onnx, tmp_path):
    """atol 1 on a probability says little: with --eval-data the hop is judged on top-1 too, and its budget is
    what the int8 source's own drop (its manifest's record on the same data) left of max_accuracy_drop."""
    from modelkit.converters.gate_verdict import summary

    sig = modelkit.load(tiny_onnx).signature
    data = _labelled(tiny_onnx, tmp_path, flip=4)
    record = {"ok": True, "quantization": "int8", "data": "eval.npz (user data)", "metric": "top-1", "drop": 0.008}
    _manifest.write(tiny_onnx, _manifest.Manifest(format="onnx", signature=sig.to_dict(), quantization="int8",
                                                  extra={"accuracy": record}))
    (r,) = modelkit.convert(tiny_onnx, "openvino", out_dir=tmp_path / "q", eval_data=data)
    acc = r.accuracy
    assert acc["ok"] and acc["quantization"] == "int8" and acc["metric"] == "top-1" and acc["samples"] == 64
    assert acc["source_accuracy"] == acc["artifact_accuracy"] == 0.9375  # 60 of 64: the labels were read
    assert acc["max_accuracy_drop"] == pytest.approx(0.002) and acc["max_accuracy_drop_of_chain"] == 0.01
    assert "max 0.002, what the source's own drop left of 0.01" in summary(acc)
    assert _manifest.read(r.path).extra["accuracy"]["max_accuracy_drop"] == pytest.approx(0.002)
    (r,) = modelkit.convert(tiny_onnx, "openvino", out_dir=tmp_path / "n")  # no labels: the bounds alone, as before
    assert r.accuracy is None and r.parity["ok"]


def test_the_budget_left_by_a_source_adds_drops_and_compounds_mae_increases():
    from modelkit.converters.gate import left_by

    def src(**record):
        return _manifest.Manifest(format="onnx", signature={}, extra={"accuracy": {"data": "d", **record}})

    assert left_by(src(drop=0.004, metric="top-1"), 0.01, "d") == pytest.approx(0.006)
    assert left_by(src(drop=-0.003, metric="binary"), 0.01, "d") == pytest.approx(0.013)  # it gained: more is left
    assert left_by(src(drop=0.05, metric="top-1"), 0.01, "d") == 0.0  # never below 0
    assert left_by(src(drop=0.1, metric="mae"), 0.21, "d") == pytest.approx(0.1)  # 1.1 * 1.1 = 1.21
    assert left_by(src(drop=0.004, metric="top-1"), 0.01, "other data") == 0.01  # judged on other data: all of it
    assert left_by(None, 0.01, "d") == 0.01


def test_the_budget_left_is_printed_rounded():
    """nc44 / nc45: 'max 0.016667, what the source's own drop left of 0.01' (a drop of -0.0067 left 0.0167)."""
    from modelkit.converters.gate_verdict import summary

    acc = {"ok": True, "metric": "top-1", "source_accuracy": 0.9983, "artifact_accuracy": 0.9983, "drop": 0.0,
           "max_accuracy_drop": 0.01 + 1 / 600, "max_accuracy_drop_of_chain": 0.01, "samples": 600,
           "data": "test.npz (user data)"}
    assert "(drop +0.0000, max 0.0117, what the source's own drop left of 0.01)" in summary(acc)
