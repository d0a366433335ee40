"""The parity report in an artifact's manifest names the artifact at its final path (or the
NAME.parity-failed.EXT it was kept as), never the private `.NAME.PID.XXXX.partial/` folder it was checked in,
which is gone once the conversion ends."""
from __future__ import annotations

import json

import pytest

import modelkit
from modelkit.errors import ParityError
from modelkit.formats import manifest_path
from tests.helpers import make_tiny_onnx


def _parity(path):
    return json.loads(manifest_path(path).read_text())["parity"]


def test_the_manifest_names_the_written_artifact(tmp_path):
    pytest.importorskip("openvino")
    src = make_tiny_onnx(tmp_path / "tiny.onnx")
    (r,) = modelkit.convert(src, "openvino", out_dir=tmp_path / "out", verbose=False)
    assert _parity(r.path)["candidate"] == str(r.path) == r.parity["candidate"]
    assert ".partial" not in json.dumps(_parity(r.path))


def test_a_failed_artifact_s_manifest_names_the_kept_file(tmp_path):
    pytest.importorskip("openvino")
    src = make_tiny_onnx(tmp_path / "tiny.onnx", weight_scale=30.0)
    try:  # atol 0: OpenVINO's softmax is ~3e-8 from onnxruntime's on these logits
        modelkit.convert(src, "openvino", out_dir=tmp_path, atol=0.0, verbose=False)
    except ParityError as err:
        report = err.report
    else:
        pytest.skip("OpenVINO matched onnxruntime bit for bit here: nothing failed")
    kept = tmp_path / "tiny_openvino.parity-failed"
    assert report["candidate"] == str(kept) == _parity(kept)["candidate"]
