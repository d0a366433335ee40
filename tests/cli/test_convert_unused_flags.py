"""`modelkit convert` with --eval-data, --calibration-data or --max-accuracy-drop but no lossy --quantize: the
conversion runs as asked and one warning line says those flags were ignored (they were silently dropped). And int8
calibrated and judged on the same file: a warning that the gate is flattered."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from modelkit.cli import main
from tests.helpers import make_tiny_onnx


@pytest.fixture
def tiny(tmp_path):
    pytest.importorskip("openvino")
    import modelkit

    src = make_tiny_onnx(tmp_path / "tiny.onnx")
    x = np.random.default_rng(0).standard_normal((64, 4)).astype(np.float32)
    np.savez(tmp_path / "test.npz", x=x, y=modelkit.load(src).predict({"x": x})["probs"].argmax(-1))
    return src


def test_eval_data_without_quantize_warns_and_converts(tiny, tmp_path):
    r = CliRunner().invoke(main, ["-q", "convert", str(tiny), "--to", "openvino", "--eval-data",
                                  str(tmp_path / "test.npz"), "--max-accuracy-drop", "0.02"])
    assert r.exit_code == 0, r.output
    assert r.stderr.strip().splitlines() == [
        "warning: --eval-data, --max-accuracy-drop apply to quantized conversions only (--quantize); ignored: "
        "each hop is judged by parity (--data: the samples to verify on)"]
    assert (tmp_path / "tiny_openvino").is_dir()


def test_no_warning_with_quantize_or_without_the_flags(tiny, tmp_path):
    r = CliRunner().invoke(main, ["-q", "convert", str(tiny), "--to", "openvino"])
    assert r.exit_code == 0 and "warning" not in r.stderr
    r = CliRunner().invoke(main, ["-q", "convert", str(tiny), "--to", "openvino", "--quantize", "int8",
                                  "--calibration-data", str(tmp_path / "test.npz"),
                                  "--eval-data", str(tmp_path / "test.npz"), "--out", str(tmp_path / "q")])
    assert r.exit_code == 0 and "warning: --eval-data" not in r.stderr, r.output


def test_one_unused_flag_is_named_in_the_singular(tiny, tmp_path):
    r = CliRunner().invoke(main, ["-q", "convert", str(tiny), "--to", "openvino", "--eval-data",
                                  str(tmp_path / "test.npz")])
    assert r.exit_code == 0, r.output
    assert r.stderr.startswith("warning: --eval-data applies to quantized conversions only (--quantize); ignored")


def test_int8_calibrated_and_judged_on_one_file_warns(tiny, tmp_path):
    data = str(tmp_path / "test.npz")
    r = CliRunner().invoke(main, ["-q", "convert", str(tiny), "--to", "openvino", "--quantize", "int8",
                                  "--calibration-data",
                                  data, "--eval-data", data, "--out", str(tmp_path / "q")])
    assert r.exit_code == 0, r.output
    assert r.stderr.strip().splitlines() == [
        "warning: the calibration data and the eval data are the same file (test.npz): the accuracy gate then judges "
        "the int8 model on the samples its ranges were fitted to, which flatters it; give --eval-data held-out "
        "samples (eval_data= in Python)"]
    assert (tmp_path / "q" / "tiny.int8_openvino").is_dir()
