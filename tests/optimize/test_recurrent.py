"""optimize on a recurrent model: OpenVINO refuses the ONNX Loop tf2onnx writes for an LSTM; every OpenVINO
candidate of an LSTM/GRU classifier once failed with advice (`--route torch`) the user could not give optimize.
convert takes that route itself now (tests/convert/test_openvino_route_retry.py), beside the onnx candidate's file."""
from __future__ import annotations

import numpy as np
import pytest

from modelkit import manifest as _manifest
from modelkit.optimization import build as _build
from tests.helpers.models import make_masked_lstm

pytest.importorskip("openvino")
pytest.importorskip("torch")


@pytest.mark.slow
def test_an_lstm_classifier_gets_its_openvino_candidate_and_the_onnx_file_stays_tf2onnx(tmp_path):
    """Masking -> LSTM: tf2onnx writes a Loop (an LSTM alone becomes an ONNX LSTM op, which OpenVINO takes)."""
    src = tmp_path / "rnn.keras"
    _, x = make_masked_lstm(src, units=8, classes=3)
    data = tmp_path / "test.npz"
    np.savez(data, x=x[:16])
    work = tmp_path / "work"
    work.mkdir()
    gate = {"model_sha256": _manifest.sha256_of(src), "data": str(data), "calibration": None,
            "data_sha256": _manifest.sha256_of(data), "max_accuracy_drop": 0.01, "batch": 1}
    onnx = {"build": "onnx-fp32", "format": "onnx", "quantize": None, "engine": "onnxruntime", "status": "planned"}
    ov = {"build": "openvino-fp32", "format": "openvino", "quantize": None, "engine": "openvino", "status": "planned"}
    first = _build.build(src, onnx, work, gate)
    built = _build.build(src, ov, work, gate)
    assert built["status"] == "built", built["reason"]
    assert built["gate"]["parity_ok"]
    onnx_manifest = _manifest.read(first["path"])
    assert onnx_manifest.sha256 == _manifest.sha256_of(first["path"]) == first["sha256"]  # not replaced
    assert _build.build(src, onnx, work, gate)["cached"]
    again = _build.build(src, ov, work, gate)
    assert again["cached"] and again["path"] == built["path"]
