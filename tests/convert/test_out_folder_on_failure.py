"""`convert --out NEW/FOLDER` that fails before writing anything (samples that do not fit the model) leaves
no empty folders behind; a folder that existed before, or one that holds what the run kept, stays."""
from __future__ import annotations

import numpy as np
import pytest

import modelkit
from modelkit.errors import ParityError, ShapeError
from tests.helpers import make_tiny_onnx


@pytest.fixture
def tiny_and_bad(tmp_path):
    pytest.importorskip("openvino")
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((3, 5), np.float32))  # the model takes (?, 4)
    return make_tiny_onnx(tmp_path / "tiny.onnx"), bad


def test_the_folders_a_failed_run_created_are_removed(tiny_and_bad, tmp_path):
    src, bad = tiny_and_bad
    with pytest.raises(ShapeError, match="bad.npz"):
        modelkit.convert(src, "openvino", out_dir=tmp_path / "new" / "out", data=bad, verbose=False)
    assert not (tmp_path / "new").exists()


def test_a_folder_that_existed_stays(tiny_and_bad, tmp_path):
    src, bad = tiny_and_bad
    (tmp_path / "mine").mkdir()
    with pytest.raises(ShapeError):
        modelkit.convert(src, "openvino", out_dir=tmp_path / "mine" / "out", data=bad, verbose=False)
    assert (tmp_path / "mine").is_dir() and not (tmp_path / "mine" / "out").exists()


def test_a_run_that_keeps_a_failed_artifact_keeps_its_folder(tmp_path):
    pytest.importorskip("openvino")
    src = make_tiny_onnx(tmp_path / "tiny.onnx", weight_scale=30.0)
    try:  # atol 0: OpenVINO's softmax is ~3e-8 from onnxruntime's on these logits
        modelkit.convert(src, "openvino", out_dir=tmp_path / "out", atol=0.0, verbose=False)
    except ParityError:
        pass
    else:
        pytest.skip("OpenVINO matched onnxruntime bit for bit here: nothing failed")
    assert (tmp_path / "out" / "tiny_openvino.parity-failed").is_dir()
