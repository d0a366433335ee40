"""An int8 TFLite model XNNPACK cannot prepare (Masking -> LSTM, unrolled, full-int8: "failed to create XNNPACK
runtime ... TfLiteXNNPackDelegate failed to prepare") runs on the builtin kernels instead: optimize's tflite-int8
candidate of such a classifier failed its gate on that error, though the model itself runs."""
from __future__ import annotations

import numpy as np
import pytest

import modelkit
from tests.helpers.models import make_masked_lstm

pytest.importorskip("ai_edge_litert")


@pytest.mark.slow
def test_an_int8_lstm_xnnpack_refuses_runs_without_it(tmp_path):
    from modelkit.converters import convert

    src = tmp_path / "rnn.keras"
    model, x = make_masked_lstm(src, units=32, classes=10)
    cal = tmp_path / "cal.npz"
    np.savez(cal, x=x)
    res = convert(src, "tflite", out_dir=tmp_path, verify=False,
                  options={"quantize": "int8", "calibration_data": str(cal)})[0]
    m = modelkit.load(res.path)
    want = model.predict(x, verbose=0)
    for n in (1, 8):
        got = m.predict(x[:n])
        got = next(iter(got.values())) if isinstance(got, dict) else got
        assert got.shape == (n, 10) and np.abs(got - want[:n]).max() < 0.1
