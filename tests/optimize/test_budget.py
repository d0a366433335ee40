"""The budget of `modelkit optimize` bounds the builds: what it does not reach is skipped with the reason."""
from __future__ import annotations

import modelkit


def test_a_budget_too_short_for_every_build_makes_what_it_reaches_and_skips_the_rest_saying_so(cnn_tf, tmp_path):
    """The shortest budget (20 s) keeps half for measuring (it used to keep all 20 s, so no build ever started and
    the run could only fail): the builds it reaches are made and measured, the rest are skipped with the budget
    named, none half-done."""
    r = modelkit.optimize(cnn_tf, budget="20s", formats="onnx,tflite,torchscript,pt2,saved_model",
                          precisions=("fp32",), threads=(1,), rounds=1, cache_dir=tmp_path / "cache",
                          out=tmp_path / "out")
    skipped = [c for c in r.candidates if c["status"] == "skipped"]
    assert skipped and all("the budget ran out before it was built" in c["reason"] for c in skipped)
    assert r.winner["status"] == "measured" and (tmp_path / "out" / r.winner["path"].split("/")[-1]).exists()
    builds = next((tmp_path / "cache" / "builds").iterdir())
    files = {"onnx": "*.onnx", "tflite": "*.tflite", "torchscript": "*.torchscript.pt", "pt2": "*.pt2",
             "saved_model": "*_saved_model"}
    for c in skipped:
        assert not list(builds.glob(files[c["format"]])), c["build"]
