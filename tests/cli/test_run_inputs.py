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


def test_a_library_of_a_fixed_batch_runs_every_row_of_the_file(tmp_path):
    """A compiled library takes the batch it was compiled for only: `run` feeds the file's rows that many at a
    time and says so, instead of failing on a 500-row file with 'dimension 0 must be 1'."""
    from tests.helpers.server import tiny_expected

    path = make_tiny_onnx(tmp_path / "b2.onnx", batch=2)
    x = np.random.default_rng(0).random((5, 4), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    r = CliRunner().invoke(main, ["run", str(path), "--input", str(tmp_path / "x.npy"),
                                  "--output", str(tmp_path / "out.npz")])
    assert r.exit_code == 0, r.output
    assert "b2.onnx takes batches of 2: running the 5 rows in 3 calls" in r.output
    np.testing.assert_allclose(np.load(tmp_path / "out.npz")["probs"], tiny_expected(x), atol=1e-6)
    np.save(tmp_path / "two.npy", x[:2])  # exactly the batch: one call, nothing said
    r = CliRunner().invoke(main, ["run", str(path), "--input", str(tmp_path / "two.npy")])
    assert r.exit_code == 0 and "takes batches" not in r.output and "probs: float32(2, 3)" in r.output


def test_the_input_file_can_be_the_second_argument_and_o_names_the_output(pixels_onnx, tmp_path):
    """A newcomer typed `modelkit run model.tflite x.npz -o out.npz` (nc21): 'No such option -o', and the file as
    an argument was 'unexpected extra argument'. Both forms work; two inputs or none is a usage error."""
    x = np.random.default_rng(0).random((3, 4), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    r = CliRunner().invoke(main, ["run", str(pixels_onnx), str(tmp_path / "x.npy"), "-o", str(tmp_path / "o.npz")])
    assert r.exit_code == 0, r.output
    with np.load(tmp_path / "o.npz") as got:
        assert got["probs"].shape == (3, 3)
    r = CliRunner().invoke(main, ["run", str(pixels_onnx), "-i", str(tmp_path / "x.npy")])
    assert r.exit_code == 0 and "probs: float32(3, 3)" in r.output
    r = CliRunner().invoke(main, ["run", str(pixels_onnx), str(tmp_path / "x.npy"), "--input", str(tmp_path / "x.npy")])
    assert r.exit_code == 2 and "Error: two input files" in r.output
    r = CliRunner().invoke(main, ["run", str(pixels_onnx)])
    assert r.exit_code == 2 and "Error: no input file: modelkit run ARTIFACT x.npz (or --input x.npz)" in r.output
