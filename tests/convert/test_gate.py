"""The accuracy gate of quantized hops on models that are not single-label classifiers (modelkit.converters.gate):
multi-label taggers and one-column binary classifiers (sigmoid or logit) judged by binary accuracy, and the
models no labels can judge (regressors, maps) refused before any work, saying why and what to do."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import modelkit
from modelkit.converters import gate
from modelkit.errors import ConversionError, InputError
from modelkit.spec import Signature, TensorSpec
from tests.helpers.models import train_binary


def _sig(*outputs: tuple[str, tuple]) -> Signature:
    return Signature((TensorSpec("x", (None, 8)),), tuple(TensorSpec(n, s) for n, s in outputs))


def test_labels_pick_the_metric_and_the_output_they_judge(tmp_path):
    p = tmp_path / "eval.npz"
    assert gate.read_labels(np.array([2, 0, 1]), p).tolist() == [2, 0, 1]
    assert gate.read_labels(np.array([[0.], [1.]]), p).tolist() == [0, 1]  # a column of float 0/1
    assert gate.read_labels(np.eye(3)[[2, 0]], p).tolist() == [2, 0]  # one-hot rows
    assert gate.read_labels(np.array([[.1, .7, .2]]), p).tolist() == [1]  # per-class scores
    tags = gate.read_labels(np.array([[1, 0, 1], [0, 0, 0], [0, 1, 0]]), p)
    assert tags.shape == (3, 3) and tags.tolist() == [[1, 0, 1], [0, 0, 0], [0, 1, 0]]  # multi-hot kept whole
    with pytest.raises(InputError, match=r"eval.npz: 'y' holds values that are no class labels \(e.g. 151.5, dtype "
                                         r"float64\).*a regressor cannot be gated by accuracy; convert without"):
        gate.read_labels(np.array([3.0, 151.5]), p)

    both = _sig(("probs", (None, 4)), ("p", (None, 1)))
    assert gate.judge(both, np.array([0, 3])) == gate.Judge("probs", gate.TOP1)
    assert gate.judge(both, tags[:, :1].repeat(4, axis=1)) == gate.Judge("probs", gate.BINARY)
    assert gate.judge(_sig(("v", (None, 2, 2)), ("p", (None, 1))), np.array([0, 1])) == gate.Judge("p", gate.BINARY)
    with pytest.raises(InputError, match=r"'y' holds labels 0..4; the model's output 'probs' has 4 classes"):
        gate.judge(both, np.array([0, 4]))
    with pytest.raises(ConversionError, match=r"'y' holds multi-hot rows of 3 tags, and no output among \['probs', "
                                              r"'p'\] has shape \(batch, 3\)"):
        gate.judge(both, tags)
    with pytest.raises(ConversionError, match=r"'y' holds labels 0..300, and the model's outputs \['v'\] have one "
                                              r"column: .*0/1 labels \(a regressor cannot be gated by accuracy\)"):
        gate.judge(_sig(("v", (None, 1))), np.array([0, 300]))
    with pytest.raises(InputError, match=r"no output among \['mask'\] to measure accuracy on: .*\(batch, classes\) "
                                         r"\(top-1 on class ids\), \(batch, 1\) .*; convert without --quantize"):
        gate.check_judgeable(_sig(("mask", (None, 8, 8, 2))))
    assert gate.threshold(np.array([0.0, 0.3, 1.004])) == 0.5  # an int8 sigmoid rounds a little past 1


def test_a_regressors_targets_beside_calibration_samples_are_no_labels_and_no_error(tmp_path):
    """--calibration-data (labels not needed) holding a regressor's 'y' was refused for its labels."""
    from modelkit.converters.quantize import load_npz

    sig = Signature((TensorSpec("x", (None, 8)),), (TensorSpec("v", (None, 1)),))
    np.savez(tmp_path / "train.npz", x=np.zeros((4, 8), np.float32), y=np.array([3.5, 151.25, 8.0, 0.1]))
    inputs, labels = load_npz(tmp_path / "train.npz", sig, need_labels=False)
    assert labels is None and inputs["x"].shape == (4, 8)
    with pytest.raises(InputError, match="'y' holds values that are no class labels"):
        load_npz(tmp_path / "train.npz", sig, need_labels=True)
    assert gate.threshold(np.array([-2.5, 0.3, 4.0])) == 0.0  # logits


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gate")
    return {kind: train_binary(kind, folder) for kind in ("tagger", "logit", "wide")}


@pytest.mark.parametrize("kind, output, threshold", [("tagger", "tags", 0.5), ("logit", "logit", 0.0)])
def test_taggers_and_one_column_classifiers_are_judged_by_binary_accuracy(trained, tmp_path, kind, output, threshold):
    """nc22's multi-label tagger was refused (its multi-hot 'y' has no top-1 class), and a single-sigmoid or
    single-logit binary classifier had 'no class-probability output': both are now gated by binary accuracy."""
    src, ev = trained[kind]
    (r,) = modelkit.convert(src, "onnx", out_dir=tmp_path, quantize="dynamic-int8", eval_data=ev)
    acc = r.accuracy
    assert acc["ok"] and acc["metric"] == "binary" and acc["output"] == output and acc["samples"] == 256
    assert acc["threshold"] == {"source": threshold, "artifact": threshold}
    assert acc["source_accuracy"] >= 0.9 and abs(acc["drop"]) <= 0.01 and acc["decision_agreement"] >= 0.97
    manifest = json.loads(Path(r.path + ".modelkit.json").read_text())
    assert manifest["extra"]["accuracy"]["metric"] == "binary"


def test_a_wide_and_deep_model_is_judged_on_its_sigmoid_from_the_cli(trained, tmp_path):
    """The two-output model (a sigmoid, then a regression) was refused as having no class output."""
    src, ev = trained["wide"]
    out = subprocess.run([sys.executable, "-m", "modelkit", "convert", str(src), "--to", "onnx", "--quantize",
                          "dynamic-int8", "--eval-data", str(ev), "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    line = next(ln for ln in out.stderr.splitlines() if "binary accuracy OK" in ln)
    assert "on 256 samples of wide_eval.npz" in line
    acc = json.loads((tmp_path / "wide.dynamic-int8.onnx.modelkit.json").read_text())["extra"]["accuracy"]
    assert acc["output"] == "p" and acc["source_accuracy"] >= 0.9


def _regressor(tmp_path: Path) -> Path:
    from modelkit._backend import import_keras

    keras = import_keras("tensorflow")
    x = keras.Input((10,), name="features")
    src = tmp_path / "diab.keras"  # the user's own file: no manifest, no data set
    keras.Model(x, keras.layers.Dense(1, name="target")(x)).save(src)
    return src


def test_a_regressor_is_refused_before_converting_whatever_labels_it_brings(tmp_path, capfd):
    """A regressor's targets are no labels: refused before any work, each time saying a regressor cannot be
    gated; without --eval-data the request for data says so too (a one-column output could be a classifier)."""
    src = _regressor(tmp_path)
    x = np.random.default_rng(0).random((16, 10), dtype=np.float32)
    with pytest.raises(ConversionError, match=r"needs data .*\(its output 'target' has one column: 0/1 labels judge "
                                              r"it by binary accuracy; a regressor cannot be gated by accuracy: "
                                              r"convert it without --quantize\)"):
        modelkit.convert(src, "onnx", out_dir=tmp_path / "out", quantize="dynamic-int8")
    np.savez(tmp_path / "targets.npz", x=x, y=np.linspace(25, 346, 16))
    with pytest.raises(InputError, match=r"targets.npz: 'y' holds values that are no class labels \(e.g. 46.4, "):
        modelkit.convert(src, "onnx", out_dir=tmp_path / "out", quantize="dynamic-int8",
                         eval_data=tmp_path / "targets.npz")
    np.savez(tmp_path / "rounded.npz", x=x, y=np.arange(16) * 20)
    with pytest.raises(InputError, match=r"'y' holds labels 0..300, .*\(a regressor cannot be gated by accuracy\); "
                                         r"convert without --quantize"):
        modelkit.convert(src, "onnx", out_dir=tmp_path / "out", quantize="dynamic-int8",
                         eval_data=tmp_path / "rounded.npz")
    assert "converting" not in capfd.readouterr().err and not (tmp_path / "out").exists()
