"""`modelkit run --input data.npz` reads an .npz as `--data` does on convert and verify: for a one-input model
a lone 'x' (else 'x_test') is the input, labels ('y') are left out; other keys still fail in one line."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from modelkit.cli import main
from tests.helpers import make_tiny_onnx


@pytest.fixture
def pixels_onnx(tmp_path) -> Path:
    """The tiny ONNX model with its input named 'pixels', so that 'x' names no input."""
    import onnx

    path = make_tiny_onnx(tmp_path / "tiny.onnx")
    proto = onnx.load(str(path))
    proto.graph.input[0].name = "pixels"
    proto.graph.node[0].input[0] = "pixels"
    onnx.save(proto, str(path))
    return path


@pytest.mark.parametrize("keys", [("x", "y"), ("x",), ("x_test", "y_test"), ("pixels", "y")])
def test_an_eval_or_calibration_npz_runs_on_a_one_input_model(pixels_onnx, tmp_path, keys):
    x = np.random.default_rng(0).random((5, 4), dtype=np.float32)
    arrays = {k: (np.arange(5) if k.startswith("y") else x) for k in keys}
    np.savez(tmp_path / "d.npz", **arrays)
    r = CliRunner().invoke(main, ["run", str(pixels_onnx), "--input", str(tmp_path / "d.npz")])
    assert r.exit_code == 0, r.output
    assert "probs: float32(5, 3)" in r.output


def test_a_key_that_names_no_input_is_still_one_line(pixels_onnx, tmp_path):
    np.savez(tmp_path / "d.npz", image=np.zeros((2, 4), np.float32))
    r = CliRunner().invoke(main, ["run", str(pixels_onnx), "--input", str(tmp_path / "d.npz")])
    assert r.exit_code == 2
    assert r.output.strip().splitlines() == [
        "error: input names do not match the signature: missing ['pixels'], unexpected ['image']; "
        "expected ['pixels']"]
