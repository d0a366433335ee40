"""`modelkit optimize` end to end on the digits CNN (real conversions, real engines, real measurements), and its
argument checks. The search is narrowed (--formats, --threads, a small budget) to stay fast in CI."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

import modelkit
from modelkit import manifest as _manifest
from modelkit import optimize
from modelkit.errors import ArtifactExistsError, InputError, OptimizeError
from modelkit.optimization import candidates, data
from tests.helpers.cli import modelkit_script, one_line_error


@pytest.fixture(scope="module")
def digits_test(tmp_path_factory):
    from modelkit.core import data as _data

    ds = _data.load("digits", seed=0)
    path = tmp_path_factory.mktemp("opt_data") / "test.npz"
    np.savez(path, x=ds.x_test, y=ds.y_test)
    return path


@pytest.fixture(scope="module")
def searched(cnn_tf, digits_test, tmp_path_factory):
    """One search of the digits CNN over onnx and tflite, every precision, one thread; then the same again."""
    base = tmp_path_factory.mktemp("opt")
    kw = dict(target="server-cpu", data=digits_test, formats=("onnx", "tflite"), threads=(1,), budget="6m",
              rounds=3, cache_dir=base / "cache")
    first = optimize(cnn_tf, out=base / "out", **kw)
    again = optimize(cnn_tf, out=base / "again", **kw)
    return first, again, base, kw


@pytest.mark.slow
def test_the_winner_meets_the_limits_and_beats_keras_predict(searched):
    first, _, _, _ = searched
    w = first.winner
    assert w["status"] == "measured" and w["key"] == first.decision["winner"]
    assert w["accuracy_drop"] is not None and w["accuracy_drop"] <= 0.01
    keras = next(c for c in first.candidates if c["key"] == "keras.predict")
    assert w["p50_ms"] < keras["p50_ms"] and w["ci95_ms"][0] <= w["p50_ms"] <= w["ci95_ms"][1]
    measured = [c for c in first.candidates if c["status"] == "measured" and c["key"] != "keras.predict"]
    assert {c["format"] for c in measured} == {"onnx", "tflite"} and len(measured) >= 5  # 3 onnx + 4 tflite builds
    fastest = min(measured, key=lambda c: c["p50_ms"])
    if w["key"] != fastest["key"]:  # only for an exact one within the fastest's noise
        assert w["quantize"] is None and w["ci95_ms"][0] <= fastest["ci95_ms"][1]
    runs = modelkit.load(first.path).predict(np.zeros((2, 8, 8, 1), np.float32))
    assert next(iter(runs.values())).shape == (2, 10)


def test_dir_holds_the_winner_its_manifest_with_the_decision_and_the_report(searched):
    first, _, _, _ = searched
    out = os.path.dirname(first.path)
    m = _manifest.read(first.path)
    decision = m.extra["optimize"]
    assert decision["winner"]["key"] == first.winner["key"] and decision["limits"]["max_accuracy_drop"] == 0.01
    assert len(decision["candidates"]) == len(first.candidates) and decision["why"].startswith(first.winner["key"])
    assert m.sha256 == _manifest.sha256_of(first.path)  # the copy is the artifact its manifest describes
    html = open(first.report).read()
    assert first.winner["key"] in html and html.count("<img") == 2 and "keras.predict" in html
    record = json.load(open(os.path.join(out, "candidates.json")))
    assert record["decision"]["winner"] == first.winner["key"] and record["data"]["labelled"] is True


def test_a_rerun_reuses_every_build_and_measurement(searched):
    first, again, _, _ = searched
    built = [c for c in again.candidates if c.get("path") and c["key"] != "keras.predict"]
    assert built and all(c["cached"] for c in built)
    assert all(c.get("from_cache") for c in again.candidates if c["status"] == "measured")
    assert again.winner["key"] == first.winner["key"] and again.winner["p50_ms"] == first.winner["p50_ms"]


def test_an_impossible_limit_is_a_typed_error_naming_the_closest_and_writes_nothing(searched, cnn_tf):
    _, _, base, kw = searched
    with pytest.raises(OptimizeError, match=r"the closest: \S+ \(p99 \S+ ms > 1.00e-06 ms \(\+") as err:
        optimize(cnn_tf, out=base / "none", max_p99_ms=1e-6, **kw)
    assert "closest" in str(err.value) and not (base / "none").exists()  # a changed limit: measured from the cache


def test_an_existing_out_is_refused_before_any_work(searched, cnn_tf):
    first, _, _, kw = searched
    with pytest.raises(ArtifactExistsError, match="exists"):
        optimize(cnn_tf, out=first.out_dir, **kw)


def test_the_cli_prints_the_table_and_writes_dir(searched, cnn_tf, tmp_path):
    _, _, base, kw = searched
    r = modelkit_script("optimize", str(cnn_tf), "--data", str(kw["data"]), "--formats", "onnx",
                        "--threads", "1", "--budget", "6m", "--rounds", "3", "--cache-dir", str(kw["cache_dir"]),
                        "--out", "deploy", "--package", "triton", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert " won: " in r.stdout and "keras.predict" in r.stdout and "wrote " in r.stdout
    assert (tmp_path / "deploy" / "report.html").is_file()
    pkg = next((tmp_path / "deploy").glob("package-triton"))
    config = (pkg / next(os.walk(pkg))[1][0] / "config.pbtxt").read_text()
    assert 'key: "intra_op_thread_count"' in config and 'string_value: "1"' in config  # the winner's threads


def test_package_browser_bundles_the_onnx_winner_and_says_how_it_was_timed(searched, cnn_tf, tmp_path):
    _, _, _, kw = searched
    res = optimize(cnn_tf, out=tmp_path / "web", package="browser", **{**kw, "formats": ("onnx",)})
    bundle = tmp_path / "web" / "package-browser"
    assert res.package == str(bundle) and res.winner["format"] == "onnx"
    assert (bundle / "model.onnx").read_bytes() == open(res.path, "rb").read() and (bundle / "index.html").is_file()
    assert "onnxruntime-web runs the same file" in res.decision["why"]


def test_cli_errors_are_one_line(cnn_tf, digits_test, tmp_path):
    assert "no candidates for server-gpu" in one_line_error(["optimize", str(cnn_tf), "--target", "server-gpu"])
    assert "--max-p99-ms cannot be checked for edge-arm64" in one_line_error(
        ["optimize", str(cnn_tf), "--target", "edge-arm64", "--max-p99-ms", "2"])
    assert "bad budget" in one_line_error(["optimize", str(cnn_tf), "--budget", "soon"])
    assert "valid: onnx" in one_line_error(["optimize", str(cnn_tf), "--formats", "onnx,coreml"])
    assert "serves onnx, saved_model, torchscript, openvino, not tflite" in one_line_error(
        ["optimize", str(cnn_tf), "--formats", "tflite", "--package", "triton"])
    npy = tmp_path / "x.npy"
    np.save(npy, np.zeros((4, 8, 8, 1), np.float32))
    assert "not a single .npy" in one_line_error(["optimize", str(cnn_tf), "--data", str(npy),
                                                  "--out", str(tmp_path / "o")])


def test_plan_says_why_a_candidate_is_not_tried(monkeypatch):
    builds = candidates.plan("server-cpu", formats=("onnx", "tflite"), labelled=False)
    lossy = [b for b in builds if b["quantize"]]
    assert lossy and all(b["status"] == "skipped" and "labelled" in b["reason"] for b in lossy)
    monkeypatch.setattr(candidates, "installed", lambda fmt: fmt != "tflite")
    tfl = [b for b in candidates.plan("server-cpu", formats=("tflite",)) if b["format"] == "tflite"]
    assert all(b["status"] == "skipped" and "modelkit[tflite]" in b["reason"] for b in tfl)
    assert candidates.plan("server-cpu", formats=("onnx",), precisions=("fp32",))[0]["quantize"] is None
    cores = len(os.sched_getaffinity(0))
    assert candidates.thread_counts((cores, 1, cores)) == tuple(sorted({1, cores}))
    with pytest.raises(OptimizeError, match=f"thread counts run from 1 to the {cores} CPUs"):
        candidates.thread_counts((1, cores + 1))  # t{cores + 1} measured here would be time-sliced, and could win


def test_calibration_rows_are_never_the_rows_accuracy_is_judged_on(tmp_path):
    model = tmp_path / "m.keras"
    model.write_bytes(b"not read: no manifest")
    x = np.arange(100, dtype=np.float32).reshape(100, 1)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(100) % 3)
    p = data.prepare(tmp_path / "d.npz", model, tmp_path / "work")
    cal, ev = np.load(p["calibration"]), np.load(p["data"])
    assert len(cal["x"]) == 25 and len(ev["x"]) == 75 and "y" not in cal.files
    assert not set(cal["x"].ravel()) & set(ev["x"].ravel()) and p["labelled"] and p["rows"] == 75
    np.savez(tmp_path / "small.npz", x=x[:10], y=np.arange(10))
    with pytest.raises(OptimizeError, match="needs at least"):
        data.prepare(tmp_path / "small.npz", model, tmp_path / "work")
    np.savez(tmp_path / "float.npz", x=x, y=np.linspace(0, 1, 100))
    regression = data.prepare(tmp_path / "float.npz", model, tmp_path / "work")  # a regressor's targets
    assert not regression["labelled"] and "a regressor's targets" in regression["unlabelled"]


def test_bad_limits_are_refused_before_any_work(cnn_tf, tmp_path):
    with pytest.raises(InputError, match="max_p99_ms must be a positive number"):
        optimize(cnn_tf, max_p99_ms=0, out=tmp_path / "o")
    with pytest.raises(InputError, match="too short"):
        optimize(cnn_tf, budget="5s", out=tmp_path / "o")
    with pytest.raises(OptimizeError, match="starts from a .keras"):
        optimize(__file__, out=tmp_path / "o")
