"""`modelkit optimize` on what a newcomer brings: data without labels, data that does not fit the model, a model
that is not one. Narrow, fast searches (one format, one thread, one round)."""
from __future__ import annotations

import os

import numpy as np
import pytest

from modelkit import optimize
from modelkit.errors import InputError, LoadError

FAST = dict(formats=("onnx",), threads=(1,), budget="60s", rounds=1)


@pytest.fixture(scope="module")
def digits_x(tmp_path_factory):
    from modelkit.core import data as _data

    ds = _data.load("digits", seed=0)
    folder = tmp_path_factory.mktemp("opt_inputs")
    np.savez(folder / "x_only.npz", x=ds.x_test)
    return folder, ds


@pytest.mark.slow
def test_data_without_labels_tries_the_exact_builds_and_lists_the_lossy_ones_skipped(cnn_tf, digits_x, tmp_path):
    folder, _ = digits_x
    r = optimize(cnn_tf, data=folder / "x_only.npz", out=tmp_path / "o", cache_dir=tmp_path / "c", **FAST)
    assert r.winner["key"] == "onnx-fp32-t1"
    skipped = {c["key"]: c for c in r.candidates if c["status"] == "skipped"}
    assert set(skipped) == {"onnx-dynamic-int8", "onnx-int8"}
    assert all("labelled" in c["reason"] for c in skipped.values())


@pytest.mark.slow
def test_data_that_does_not_fit_the_model_is_one_input_error_naming_the_file_even_when_builds_are_reused(
        cnn_tf, digits_x, tmp_path):
    folder, ds = digits_x
    good, bad = folder / "good.npz", tmp_path / "wrong_shape.npz"
    np.savez(good, x=ds.x_test, y=ds.y_test)
    np.savez(bad, x=ds.x_test[:, :6], y=ds.y_test)
    kw = dict(cache_dir=tmp_path / "c", formats=("onnx",), precisions=("fp32",), threads=(1,), budget="60s",
              rounds=1)
    optimize(cnn_tf, data=good, out=tmp_path / "first", **kw)  # builds onnx-fp32 into the cache
    with pytest.raises(InputError, match=r"wrong_shape.npz: 'x' has shape \(\d+, 6, 8, 1\)"):
        optimize(cnn_tf, data=bad, out=tmp_path / "o", **kw)
    assert not (tmp_path / "o").exists()


def test_a_damaged_keras_file_is_one_load_error_before_any_work(tmp_path):
    bad = tmp_path / "damaged.keras"
    bad.write_bytes(b"PK\x03\x04 not really a zip" * 8)
    with pytest.raises(LoadError, match="damaged.keras: not a readable .keras archive"):
        optimize(bad, out=tmp_path / "o", cache_dir=tmp_path / "c", **FAST)
    assert not (tmp_path / "o").exists() and not (tmp_path / "c").exists()


def test_a_model_no_format_can_rebuild_stops_the_search_at_once_and_is_not_remembered(cnn_tf, tmp_path):
    """An unregistered custom class fails every build alike: one error naming --import, not N failures; and
    nothing is remembered, so the rerun with --import builds."""
    import json
    import zipfile

    from modelkit.errors import UnregisteredClassError

    custom = tmp_path / "custom.keras"
    with zipfile.ZipFile(cnn_tf) as src, zipfile.ZipFile(custom, "w") as dst:
        for item in src.infolist():
            raw = src.read(item.filename)
            if item.filename == "config.json":
                cfg = json.loads(raw)
                cfg["config"]["layers"][-1].update(class_name="Head", module=None, registered_name="nc>Head")
                raw = json.dumps(cfg).encode()
            dst.writestr(item, raw)
    with pytest.raises(UnregisteredClassError, match="--import"):
        optimize(custom, out=tmp_path / "o", cache_dir=tmp_path / "c", **FAST)
    assert not list((tmp_path / "c").rglob("failed.json")) and not (tmp_path / "o").exists()


def test_uint8_images_for_a_float_input_are_read_as_floats_for_the_accuracy_gate_and_measuring(tmp_path):
    """Parity casts samples to the input's dtype; the accuracy gate and the measuring workers (load_npz) do too,
    so uint8 images reach a float32 model whole instead of failing every lossy build with a DTypeError."""
    from modelkit.converters.quantize import load_npz
    from modelkit.spec import Signature, TensorSpec

    sig = Signature(inputs=(TensorSpec("image", (None, 8, 8, 1), "float32"),),
                    outputs=(TensorSpec("probs", (None, 10), "float32"),))
    x = np.arange(2 * 64, dtype=np.uint8).reshape(2, 8, 8, 1)
    np.savez(tmp_path / "u8.npz", x=x, y=np.array([1, 2]))
    inputs, labels = load_npz(tmp_path / "u8.npz", sig, need_labels=True)
    assert inputs["image"].dtype == np.float32 and np.array_equal(inputs["image"], x.astype(np.float32))
    assert labels.tolist() == [1, 2]


@pytest.fixture(scope="module")
def regressor(tmp_path_factory):
    """A one-output regressor (no class-probability output), saved in a child so this process keeps its backend."""
    import subprocess
    import sys

    folder = tmp_path_factory.mktemp("opt_reg")
    code = ("import keras, numpy as np; m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, "
            "activation='relu'), keras.layers.Dense(1)]); m.save(r'%s')" % (folder / "reg.keras"))
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "KERAS_BACKEND": "tensorflow"})
    rng = np.random.default_rng(0)
    np.savez(folder / "test.npz", x=rng.random((120, 4), dtype=np.float32), y=np.round(rng.random(120) * 300))
    return folder / "reg.keras", folder / "test.npz"


@pytest.mark.slow
def test_a_regressor_with_labels_measures_its_exact_builds_and_skips_the_lossy_ones_saying_why(regressor, tmp_path):
    model, test = regressor
    r = optimize(model, data=test, out=tmp_path / "o", cache_dir=tmp_path / "c", **FAST)
    assert r.winner["key"] == "onnx-fp32-t1" and r.winner["accuracy"] is None
    skipped = [c for c in r.candidates if c["status"] == "skipped"]
    assert {c["key"] for c in skipped} == {"onnx-dynamic-int8", "onnx-int8"}
    assert all("a regressor's targets: optimize ranks lossy builds by accuracy" in c["reason"] for c in skipped)


@pytest.mark.slow
def test_a_regressors_real_valued_targets_measure_its_exact_builds_too(regressor, tmp_path):
    """Targets that are no class labels (151.5, not 151) stopped optimize with an error; they are measured like
    the rounded ones above, the lossy builds skipped with the reason."""
    model, test = regressor
    with np.load(test) as d:
        np.savez(tmp_path / "real.npz", x=d["x"], y=d["y"] + 0.5)
    r = optimize(model, data=tmp_path / "real.npz", out=tmp_path / "o", cache_dir=tmp_path / "c", **FAST)
    assert r.winner["key"] == "onnx-fp32-t1" and r.winner["accuracy"] is None
    skipped = [c for c in r.candidates if c["status"] == "skipped"]
    assert {c["key"] for c in skipped} == {"onnx-dynamic-int8", "onnx-int8"}
    assert all("a regressor's targets: optimize ranks lossy builds by accuracy" in c["reason"] for c in skipped)


def test_one_hot_labels_are_read_as_classes(tmp_path):
    """Keras users' y is often one-hot (categorical_crossentropy): it was flattened to N x C labels, and refused as
    'inputs and labels have different numbers of samples'."""
    from modelkit.converters.quantize import load_npz
    from modelkit.spec import Signature, TensorSpec

    sig = Signature(inputs=(TensorSpec("x", (None, 3), "float32"),), outputs=(TensorSpec("p", (None, 3)),))
    y = np.array([2, 0, 1, 2])
    np.savez(tmp_path / "onehot.npz", x=np.zeros((4, 3), np.float32), y=np.eye(3, dtype=np.float32)[y])
    assert load_npz(tmp_path / "onehot.npz", sig, need_labels=True)[1].tolist() == y.tolist()
    np.savez(tmp_path / "column.npz", x=np.zeros((4, 3), np.float32), y=y[:, None])
    assert load_npz(tmp_path / "column.npz", sig, need_labels=True)[1].tolist() == y.tolist()


@pytest.mark.slow
def test_data_with_wrong_keys_is_an_input_error_naming_the_users_file_not_the_split(regressor, tmp_path):
    """--data is split into calibration and evaluation files in the cache; convert's messages about them used to
    name 'eval.npz', a file the user never made."""
    model, _ = regressor
    bad = tmp_path / "my_test.npz"
    np.savez(bad, features=np.zeros((100, 4), np.float32))
    with pytest.raises(InputError, match=r"^my_test.npz: keys \['features'\] match no input"):
        optimize(model, data=bad, out=tmp_path / "o", cache_dir=tmp_path / "c", **FAST)


def test_calibration_rows_are_spread_over_data_sorted_by_class(tmp_path):
    """sklearn's load_* data (and many test files) are sorted by class: the first quarter calibrated int8 on one
    class and left that class nearly out of the rows accuracy is judged on."""
    from modelkit.optimization import data

    model = tmp_path / "m.keras"
    model.write_bytes(b"not read: no manifest")
    y = np.repeat(np.arange(4), 25)
    np.savez(tmp_path / "sorted.npz", x=np.arange(100, dtype=np.float32)[:, None], y=y)
    p = data.prepare(tmp_path / "sorted.npz", model, tmp_path / "work")
    cal_x, ev = np.load(p["calibration"])["x"].ravel(), np.load(p["data"])
    assert len(cal_x) == 25 and sorted(set(y[cal_x.astype(int)])) == [0, 1, 2, 3]
    assert np.bincount(ev["y"]).tolist() in ([18, 19, 19, 19], [19, 18, 19, 19], [19, 19, 18, 19], [19, 19, 19, 18])
    assert not set(cal_x) & set(ev["x"].ravel())


@pytest.mark.slow
def test_labels_outside_the_models_classes_are_an_input_error_not_a_vacuous_gate(cnn_tf, digits_x, tmp_path):
    """Labels out of the model's classes (wine's y - 5: every accuracy 0, every drop 0) passed every lossy build's
    gate; they are refused once the first artifact shows the class count."""
    folder, ds = digits_x
    shifted = tmp_path / "shifted.npz"
    np.savez(shifted, x=ds.x_test, y=ds.y_test + 1)
    with pytest.raises(InputError, match=r"shifted.npz: 'y' holds labels 1..10; the model's output '\w+' has 10 "):
        optimize(cnn_tf, data=shifted, out=tmp_path / "o", cache_dir=tmp_path / "c", **FAST)


@pytest.mark.slow
def test_a_multi_label_taggers_lossy_builds_are_judged_by_binary_accuracy(tmp_path):
    """nc22's multi-label tagger: its multi-hot 'y' was refused; the int8 builds are now measured and judged by
    binary accuracy over every tag (converters.gate), as convert judges them."""
    from tests.helpers.models import train_binary

    model, ev = train_binary("tagger", tmp_path)
    r = optimize(model, data=ev, out=tmp_path / "o", cache_dir=tmp_path / "c", **FAST)
    judged = {c["key"]: c for c in r.candidates if c["status"] == "measured"}
    assert {"onnx-fp32-t1", "onnx-dynamic-int8-t1", "onnx-int8-t1"} <= set(judged)
    assert judged["onnx-fp32-t1"]["accuracy"] >= 0.9  # binary accuracy of 4 tags, not top-1 over them
    assert all(abs(judged[k]["accuracy_drop"]) <= 0.02 for k in ("onnx-dynamic-int8-t1", "onnx-int8-t1"))


def test_help_says_what_data_and_targets_optimize_takes():
    """A newcomer with one-hot labels or a regressor could not tell from --help what optimize does with them, nor
    which --target values it measures."""
    from click.testing import CliRunner

    from modelkit.cli import main

    text = " ".join(CliRunner().invoke(main, ["optimize", "--help"]).output.split())
    assert "class ids or one-hot" in text and "multi-hot tag rows: binary accuracy" in text
    assert "no output they fit (a regressor)" in text
    assert "server-cpu (measured on this machine)" in text and "edge-arm64" in text and "latency not measured" in text


def test_json_prints_the_result_as_an_object(monkeypatch, tmp_path):
    """--json printed one JSON string holding the dataclass's repr ('OptimizeResult(path=...)')."""
    import json

    from click.testing import CliRunner

    from modelkit import optimization
    from modelkit.cli import main

    model = tmp_path / "m.keras"
    model.write_bytes(b"not read here")
    result = optimization.OptimizeResult(path="/o/m.onnx", out_dir="/o", winner={"key": "onnx-fp32-t1"},
                                         decision={"winner": "onnx-fp32-t1"}, candidates=[], report="/o/report.html",
                                         package=None)
    monkeypatch.setattr(optimization, "optimize", lambda *a, **k: result)
    out = CliRunner().invoke(main, ["optimize", str(model), "--json", "--out", str(tmp_path / "o")]).output
    got = json.loads(out)
    assert isinstance(got, dict) and got["winner"]["key"] == "onnx-fp32-t1" and got["path"] == "/o/m.onnx"


def test_the_table_footer_states_the_limits_given(monkeypatch, tmp_path):
    """The CLI's 'limits:' line read 'accuracy drop <= 0.0100' whatever --max-p99-ms / --max-size-mb said."""
    from click.testing import CliRunner

    from modelkit import optimization
    from modelkit.cli import main

    model = tmp_path / "m.keras"
    model.write_bytes(b"not read here")
    limits = {"max_accuracy_drop": 0.01, "max_p99_ms": 0.05, "max_size_mb": 1.0}
    result = optimization.OptimizeResult(path="/o/m.onnx", out_dir="/o", winner={"key": "a"}, decision={"winner": "a"},
                                         candidates=[], report="/o/report.html", package=None, limits=limits)
    monkeypatch.setattr(optimization, "optimize", lambda *a, **k: result)
    out = CliRunner().invoke(main, ["optimize", str(model), "--out", str(tmp_path / "o")]).output
    assert "limits: accuracy drop <= 0.0100, p99 <= 0.0500 ms, size <= 1.00 MB" in out
