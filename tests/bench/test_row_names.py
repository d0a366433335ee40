"""`modelkit bench` names each row (and plot group) by the artifact's file name, and by the path as given
where two artifacts share a file name (all/cnn.onnx and int8/cnn.onnx were both 'cnn.onnx')."""
from __future__ import annotations

from modelkit.bench.runner import plan_jobs
from tests.helpers import make_tiny_onnx


def test_two_artifacts_of_one_name_are_told_apart(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = make_tiny_onnx(tmp_path / "a" / "m.onnx"), make_tiny_onnx(tmp_path / "b" / "m.onnx")
    c = make_tiny_onnx(tmp_path / "c.onnx")
    labels = [j.label for j in plan_jobs([a, b, c], baseline=False)]
    assert labels == [str(a), str(b), "c.onnx"]
