"""modelkit.optimization.report: the terminal table and the HTML report (plots, table, decision, atomic write)."""
from __future__ import annotations

import re

import pytest

from modelkit.optimization import report
from modelkit.optimization.decide import choose
from tests.optimize.test_decide import baseline, cand

LIMITS = {"max_accuracy_drop": 0.01, "max_p99_ms": 3.0, "max_size_mb": None}


def make_result():
    cs = [baseline(p50=6.0),
          cand("onnx-fp32-t2", 1.2, ci=(1.1, 1.3), size_mb=4),
          cand("onnx-int8-t2", 0.6, ci=(0.55, 0.65), quantize="int8", acc=0.945, size_mb=1),
          cand("tflite-fp16-t1", 2.0, ci=(1.9, 2.1), p99=4.5, quantize="fp16", fmt="tflite", size_mb=2),
          cand("tvm-t2", None, status="not measured here", reason="no RPC device for edge-arm64", fmt="tvm")]
    decision = choose(cs, LIMITS)
    return {"model": "cnn.keras", "model_sha256": "f" * 64, "target": "server-cpu", "batch": 1, "limits": LIMITS,
            "candidates": cs, "decision": decision, "budget_s": 900.0, "spent_s": 312.0,
            "machine": {"cpu": "Test CPU 9000", "logical_cpus": 2}}


def test_text_table_has_every_candidate_and_the_decision():
    result = make_result()
    text = report.text_table(result)
    lines = text.splitlines()
    for c in result["candidates"]:
        assert any(c["key"] in ln for ln in lines), c["key"]
    win = next(ln for ln in lines if "onnx-int8-t2" in ln)
    assert win.startswith("*^") and "winner" in win and "0.600" in win and "0.05" in win  # p50 ± half-width
    assert "p99 4.50 ms > 3.00 ms (+50 %)" in next(ln for ln in lines if "tflite-fp16-t1" in ln)
    assert "not measured here: no RPC device for edge-arm64" in text
    assert "baseline (Keras predict, never chosen)" in next(ln for ln in lines if "keras.predict" in ln)
    assert "limits: accuracy drop <= 0.0100, p99 <= 3.00 ms" in text
    assert lines[-1] == result["decision"]["why"]


def test_text_table_without_a_winner_says_why():
    result = make_result()
    result["decision"] = {"winner": None, "error": "no candidate meets the limits (...)", "front": [], "rejected": {}}
    assert report.text_table(result).splitlines()[-1] == "no winner: no candidate meets the limits (...)"


def test_write_html_holds_the_plots_table_winner_and_why(tmp_path):
    result = make_result()
    out = report.write_html(result, tmp_path / "sub" / "report.html")
    assert out == tmp_path / "sub" / "report.html"
    doc = out.read_text(encoding="utf-8")
    imgs = re.findall(r'<img alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', doc)
    assert len(imgs) == 2 and all(len(b) > 1000 for b in imgs)
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", doc)
    assert len(rows) == 1 + len(result["candidates"])  # header + one per candidate
    assert '<tr class=win><td>*^</td><td>onnx-int8-t2</td>' in doc
    assert "p99 4.50 ms &gt; 3.00 ms (+50 %)" in doc
    assert "Limits: accuracy drop &lt;= 0.0100, p99 &lt;= 3.00 ms" in doc
    assert result["decision"]["why"].split(";")[0] in doc
    assert "f" * 64 in doc and "Test CPU 9000" in doc and "312 s spent of a 900 s budget" in doc


def test_write_html_with_nothing_measured_has_no_plots(tmp_path):
    result = make_result()
    result["candidates"] = [c for c in result["candidates"] if c["status"] != "measured"]
    result["decision"] = {"winner": None, "error": "no candidate was measured"}
    doc = report.write_html(result, tmp_path / "r.html").read_text()
    assert "<img" not in doc and "no winner: no candidate was measured" in doc


def test_write_html_is_atomic_when_a_plot_fails(tmp_path, monkeypatch):
    def boom(result):
        raise RuntimeError("renderer broke")

    monkeypatch.setattr(report, "p50_plot", boom)
    dest = tmp_path / "report.html"
    with pytest.raises(RuntimeError, match="renderer broke"):
        report.write_html(make_result(), dest)
    assert list(tmp_path.iterdir()) == []
    dest.write_text("old report")
    with pytest.raises(RuntimeError):
        report.write_html(make_result(), dest)
    assert dest.read_text() == "old report" and list(tmp_path.iterdir()) == [dest]


def test_write_html_is_atomic_when_the_write_fails(tmp_path, monkeypatch):
    import os

    def fail(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        report.write_html(make_result(), tmp_path / "r.html")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_builds_reason_in_the_terminal_table_shows_the_file_and_the_reason_not_the_cache_path():
    """The reason starts with the artifact's absolute path in the cache: cut to the column's 70 characters at a
    word, the row read only 'failed...'."""
    from modelkit.optimization.report import table_rows

    reason = ("/root/.cache/modelkit/optimize/builds/43014b47107217f9/wine_torch.int8.parity-failed.tflite (int8) "
              "loses too much accuracy on test.npz (user data): 1.0000 -> 0.6667")
    c = {"key": "tflite-int8", "format": "tflite", "quantize": "int8", "status": "failed", "reason": reason}
    _, rows = table_rows({"candidates": [c], "decision": {}}, width=70)
    assert rows[0][-1] == "failed: wine_torch.int8.parity-failed.tflite (int8) loses too much..."
