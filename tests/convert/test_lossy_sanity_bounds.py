"""A lossy hop whose accuracy passes but whose outputs fail the loose bounds kept under the accuracy gate
(quantize.INT8_TOLERANCE / BF16_TOLERANCE: cosine >= 0.98; int8 here, which every CPU computes) fails, and says
so: the progress line and the error name those bounds, not 'judged by accuracy OK ... (not judged on)' over a
ParityError about cosine."""
from __future__ import annotations

import numpy as np
import pytest

from modelkit.converters import quantize as q
from modelkit.converters.hop import run_hop
from modelkit.converters.registry import Tolerance
from modelkit.errors import ParityError
from tests.helpers import make_tiny_onnx


def test_accuracy_ok_but_outside_the_sanity_bounds(tmp_path, monkeypatch, capfd):
    pytest.importorskip("openvino")
    import modelkit

    src = make_tiny_onnx(tmp_path / "tiny.onnx")
    x = np.random.default_rng(0).standard_normal((64, 4)).astype(np.float32)
    labels = modelkit.load(src).predict({"x": x})["probs"].argmax(-1)
    np.savez(tmp_path / "test.npz", x=x, y=labels)
    np.savez(tmp_path / "cal.npz", x=x)
    monkeypatch.setattr(q, "INT8_TOLERANCE", Tolerance(atol=1.0, min_cosine=1.5))  # no output can meet it
    with pytest.raises(ParityError) as info:
        run_hop(str(src), str(tmp_path / "tiny.int8_openvino"), "onnx", "openvino",
                options={"quantize": "int8", "calibration_data": str(tmp_path / "cal.npz")},
                eval_data=str(tmp_path / "test.npz"), max_accuracy_drop=1.0)
    message = str(info.value)
    assert "(int8): accuracy OK" in message and "fail the int8 sanity bounds" in message
    assert "output 'probs': cosine similarity" in message
    err = capfd.readouterr().err
    assert "but the outputs fail the int8 sanity bounds" in err and "not judged on" not in err
    assert (tmp_path / "tiny.int8_openvino.parity-failed").is_dir()
