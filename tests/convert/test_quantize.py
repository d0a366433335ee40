"""Quantization shared by the lossy edges: mode names, user .npz data, output naming, ONNX dynamic-int8
and static int8 judged on the digits test split, and the CLI with user calibration / eval data."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import modelkit
from modelkit.converters import output_path
from modelkit.converters import quantize as q
from modelkit.core.data import load, test_split
from modelkit.errors import ConversionError, InputError, UnsupportedConversionError
from modelkit.formats import Format
from modelkit.spec import Signature, TensorSpec


def _manifest(path: Path) -> dict:
    return json.loads(path.with_name(path.name + ".modelkit.json").read_text())


def test_mode_names_and_tolerances():
    assert q.normalize("fp32") == "none" and q.normalize("Dynamic") == "dynamic-int8" and q.normalize(None) == "none"
    assert q.check_mode("int8", Format.ONNX) == "int8"
    with pytest.raises(UnsupportedConversionError, match="valid modes for onnx: none, dynamic-int8, int8"):
        q.check_mode("fp16", Format.ONNX)
    with pytest.raises(UnsupportedConversionError, match="unknown quantization mode 'int4'"):
        q.normalize("int4")
    base = q.Tolerance(atol=1e-4, min_cosine=0.9999)
    assert q.tolerance_for("none", base) is base
    assert q.tolerance_for("fp16", base).atol == 1e-2 and q.tolerance_for("int8", base).min_cosine == 0.98


def test_quantized_outputs_get_distinct_names(tmp_path):
    src = tmp_path / "cnn.keras"
    assert output_path(src, Format.TFLITE, tmp_path, "int8").name == "cnn.int8.tflite"
    assert output_path(src, Format.ONNX, tmp_path, "dynamic-int8").name == "cnn.dynamic-int8.onnx"
    assert output_path(src, Format.TFLITE, tmp_path, "none").name == "cnn.tflite"


def test_quantize_refused_for_formats_that_cannot_before_any_work(cnn_tf, tmp_path):
    with pytest.raises(UnsupportedConversionError, match="does not apply to saved_model"):
        modelkit.convert(cnn_tf, "saved_model", out_dir=tmp_path, options={"quantize": "int8"})
    with pytest.raises(UnsupportedConversionError, match="'fp16' is not available for onnx"):
        modelkit.convert(cnn_tf, "tflite,onnx", out_dir=tmp_path, options={"quantize": "fp16"})
    assert list(tmp_path.iterdir()) == []


def test_user_npz_is_read_by_input_name_and_checked(tmp_path):
    sig = Signature((TensorSpec("image", (None, 8, 8, 1)),), (TensorSpec("probs", (None, 10)),))
    x = np.random.default_rng(0).random((5, 8, 8, 1))  # float64, as np.savez keeps it
    np.savez(tmp_path / "ok.npz", x=x, y=np.arange(5))
    inputs, labels = q.load_npz(tmp_path / "ok.npz", sig, need_labels=True)
    assert inputs["image"].dtype == np.float32 and inputs["image"].shape == (5, 8, 8, 1)
    assert labels.tolist() == [0, 1, 2, 3, 4]
    np.savez(tmp_path / "nolabels.npz", image=x)
    with pytest.raises(InputError, match="needs 'y'"):
        q.load_npz(tmp_path / "nolabels.npz", sig, need_labels=True)
    np.savez(tmp_path / "wrong.npz", pixels=x, y=np.arange(5))
    with pytest.raises(InputError, match=r"no array for input 'image'.*found \['pixels', 'y'\]"):
        q.load_npz(tmp_path / "wrong.npz", sig, need_labels=False)
    np.savez(tmp_path / "mismatch.npz", x=x, y=np.arange(4))
    with pytest.raises(InputError, match="different numbers of samples"):
        q.load_npz(tmp_path / "mismatch.npz", sig, need_labels=True)
    np.savez(tmp_path / "colour.npz", x=np.zeros((5, 8, 8, 3)))  # checked before any engine sees it
    with pytest.raises(InputError, match=r"'x' has shape \(5, 8, 8, 3\); input 'image' takes \(N, 8, 8, 1\)"):
        q.load_npz(tmp_path / "colour.npz", sig, need_labels=False)
    np.savez(tmp_path / "positional.npz", x)  # np.savez(path, x): the one array is the input
    assert q.load_npz(tmp_path / "positional.npz", sig, need_labels=False)[0]["image"].shape == (5, 8, 8, 1)
    np.savez(tmp_path / "wide.npz", np.zeros((5, 8, 8, 3)))
    with pytest.raises(InputError, match=r"'arr_0' has shape \(5, 8, 8, 3\); input 'image' takes"):
        q.load_npz(tmp_path / "wide.npz", sig, need_labels=False)


def test_int8_asks_for_every_missing_dataset_in_one_message_before_any_work(cnn_tf, tmp_path):
    import shutil

    bare = tmp_path / "src" / "cnn.keras"  # the user's own file: no manifest naming a training data set
    bare.parent.mkdir()
    shutil.copy(cnn_tf, bare)
    out = tmp_path / "out"
    msg = (r"quantization 'int8' needs data that the source's manifest does not name \(no training data set\): "
           r"calibration samples \(--calibration-data .*; and labelled data for the accuracy gate \(--eval-data")
    with pytest.raises(ConversionError, match=msg):
        modelkit.convert(bare, "tflite", out_dir=out, options={"quantize": "int8"})
    assert not out.exists()  # asked before any work
    with pytest.raises(ConversionError, match=r"needs data .*: labelled data for the accuracy gate \(--eval-data"):
        modelkit.convert(bare, "onnx", out_dir=out, options={"quantize": "dynamic-int8"})


def test_eval_data_without_labels_is_refused_before_any_work(tmp_path, capfd, monkeypatch):
    import modelkit.converters as converters
    from tests.helpers import make_tiny_onnx

    def no_work(*args, **kwargs):
        raise AssertionError("a hop started (with a .keras source: seconds of loading the model first)")

    monkeypatch.setattr(converters, "run_and_retry", no_work)  # convert calls dispatch.run_and_retry by this name
    src = make_tiny_onnx(tmp_path / "tiny.onnx")
    np.savez(tmp_path / "calib.npz", x=np.zeros((8, 4), np.float32))
    # labels under another name (a newcomer's 'label'): the message names what the file holds
    np.savez(tmp_path / "nolabels.npz", x=np.zeros((8, 4), np.float32), label=np.zeros(8, np.int64))
    with pytest.raises(InputError, match=r"nolabels.npz: no labels; an evaluation .npz needs 'y' .*; "
                                         r"it holds 'x', 'label' \(rename the labels' array to 'y'\)"):
        modelkit.convert(src, "openvino", out_dir=tmp_path / "out", quantize="int8",
                         calibration_data=tmp_path / "calib.npz", eval_data=tmp_path / "nolabels.npz")
    assert "converting" not in capfd.readouterr().err and not (tmp_path / "out").exists()
    np.save(tmp_path / "x.npy", np.zeros((8, 4), np.float32))  # a bare array: no names, no labels
    bare = r"x.npy: a single array \(.npy\), not an .npz; save the arrays by name"
    with pytest.raises(InputError, match=bare):  # was a TypeError traceback (ndarray in a `with`)
        modelkit.convert(src, "openvino", out_dir=tmp_path / "out", quantize="int8",
                         calibration_data=tmp_path / "calib.npz", eval_data=tmp_path / "x.npy")
    sig = Signature((TensorSpec("x", (None, 4)),), (TensorSpec("probs", (None, 3)),))
    with pytest.raises(InputError, match=bare):  # --calibration-data x.npy, read in the hop
        q.load_npz(tmp_path / "x.npy", sig, need_labels=False)


@pytest.mark.parametrize("mode", ["dynamic-int8", "int8"])
def test_onnx_quantized_accuracy_recorded(cnn_tf, tmp_path, mode):
    (r,) = modelkit.convert(cnn_tf, "onnx", out_dir=tmp_path, options={"quantize": mode})
    path = Path(r.path)
    assert path.name == f"cnn_tf.{mode}.onnx" and r.quantization == mode
    acc = _manifest(path)["extra"]["accuracy"]
    assert acc == r.accuracy and acc["ok"] and acc["samples"] == 360
    assert acc["source_accuracy"] >= 0.9 and acc["drop"] <= 0.01 and acc["argmax_agreement"] >= 0.97
    import onnx

    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    expected = {"dynamic-int8": "DynamicQuantizeLinear", "int8": "QuantizeLinear"}[mode]
    assert expected in ops  # really quantized
    m = modelkit.load(path)
    assert m.signature.input_names == ["image"] and m.signature.output_names == ["probs"]
    inputs, labels = test_split("digits", "cnn")
    assert float((m.predict(inputs)["probs"].argmax(-1) == labels).mean()) == pytest.approx(
        acc["artifact_accuracy"], abs=1e-6)


@pytest.mark.slow
def test_cli_int8_with_user_calibration_and_eval_data(cnn_tf, tmp_path):
    ds = load("digits")
    np.savez(tmp_path / "calib.npz", x=ds.x_train[:64])
    np.savez(tmp_path / "test.npz", image=ds.x_test[:100], y=ds.y_test[:100])
    cmd = [sys.executable, "-m", "modelkit", "convert", str(cnn_tf), "--to", "tflite", "--out", str(tmp_path / "out"),
           "--quantize", "int8", "--calibration-data", str(tmp_path / "calib.npz"),
           "--eval-data", str(tmp_path / "test.npz"), "--max-accuracy-drop", "0.02", "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (r,) = json.loads(proc.stdout)
    assert Path(r["path"]).name == "cnn_tf.int8.tflite" and r["quantization"] == "int8"
    acc = r["accuracy"]
    assert acc["data"] == "test.npz (user data)" and acc["samples"] == 100
    assert acc["max_accuracy_drop"] == 0.02 and acc["drop"] <= 0.02 and acc["ok"]
    chain = _manifest(Path(r["path"]))["chain"][0]
    assert chain["options"]["calibration_data"] == str(tmp_path / "calib.npz")
    assert "accuracy OK" in proc.stderr  # the gate's verdict is shown with the progress lines
    wrote = next(line for line in proc.stderr.splitlines() if "wrote" in line and "int8.tflite" in line)
    assert "judged by accuracy OK" in wrote and "(int8, not judged on)" in wrote and "atol" not in wrote
    shown = subprocess.run([sys.executable, "-m", "modelkit", "inspect", r["path"]], capture_output=True, text=True,
                           timeout=300)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "quantization: int8" in shown.stdout and "accuracy OK" in shown.stdout and "on 100 samples of test.npz" \
        in shown.stdout


@pytest.mark.slow
def test_a_bare_models_int8_parity_runs_on_its_eval_data_not_on_noise(cnn_tf, tmp_path):
    """A model with no training manifest: its int8 hop's parity used seeded uniform noise, outside the calibrated
    ranges (a digits-trained MobileNetV2's int8 TFLite: cosine 0.94 on noise, refused; 0.9995 on its test
    images, same accuracy). With --eval-data it runs on those samples' first rows."""
    import shutil

    bare = tmp_path / "src" / "cnn.keras"
    bare.parent.mkdir()
    shutil.copy(cnn_tf, bare)
    ds = load("digits")
    np.savez(tmp_path / "calib.npz", x=ds.x_train[:64])
    np.savez(tmp_path / "test.npz", image=ds.x_test[:100], y=ds.y_test[:100])
    (r,) = modelkit.convert(bare, "tflite", out_dir=tmp_path / "out", quantize="int8",
                            calibration_data=tmp_path / "calib.npz", eval_data=tmp_path / "test.npz")
    m = _manifest(Path(r.path))
    used = m["extra"]["verification_inputs"]
    assert used["source"] == "data" and used["label"].startswith("user samples (test.npz (user data), first 64 rows")
    assert m["parity"]["ok"] and m["parity"]["inputs"] == used["label"] and r.accuracy["ok"]
    (exact,) = modelkit.convert(bare, "tflite", out_dir=tmp_path / "out")  # exact hops keep their inferred inputs
    assert _manifest(Path(exact.path))["extra"]["verification_inputs"]["source"] in ("inferred", "uniform")


@pytest.mark.slow
def test_to_all_with_a_quantization_converts_the_formats_that_take_it(cnn_tf, tmp_path, capfd):
    """`--to all --quantize bf16` was refused whole because executorch has no bf16; 'all' means every format that
    can take the mode (TFLite alone for fp16), the others left out with one line. Named formats still refuse."""
    results = modelkit.convert(cnn_tf, "all", out_dir=tmp_path, quantize="fp16")
    assert [(r.format, r.quantization) for r in results] == [("tflite", "fp16")]
    assert Path(results[-1].path).name == "cnn_tf.fp16.tflite" and results[-1].accuracy["ok"]
    err = capfd.readouterr().err
    line = next(ln for ln in err.splitlines() if "leaving out" in ln)
    assert "--to all --quantize fp16: leaving out" in line and "executorch" in line and "onnx" in line
    assert "tflite" not in line.split("leaving out")[1]
    with pytest.raises(UnsupportedConversionError, match="'fp16' is not available for executorch"):
        modelkit.convert(cnn_tf, "tflite,executorch", out_dir=tmp_path / "named", quantize="fp16")
    assert not (tmp_path / "named").exists()


def test_classes_of_a_model_with_a_fixed_batch_are_predicted_in_chunks_of_that_batch():
    """A signature that fixes the batch (4) takes only 4 rows a call: 10 rows in 3 calls, the last filled up with
    rows from the start; a dynamic batch takes EVAL_BATCH rows a call."""
    from types import SimpleNamespace

    from modelkit.converters.gate import predict_classes
    from modelkit.spec import Signature, TensorSpec

    calls = []

    def model_with(batch):
        sig = Signature((TensorSpec("x", (batch, 3)),), (TensorSpec("p", (batch, 3)),))

        def predict(feed):
            calls.append(len(feed["x"]))
            assert batch is None or len(feed["x"]) == batch
            return {"p": np.eye(3, dtype=np.float32)[feed["x"][:, 0].astype(int) % 3]}
        return SimpleNamespace(signature=sig, predict=predict)

    x = np.repeat(np.arange(10, dtype=np.float32)[:, None], 3, axis=1)
    np.testing.assert_array_equal(predict_classes(model_with(4), {"x": x}, "p"), np.arange(10) % 3)
    assert calls == [4, 4, 4]
    calls.clear()
    np.testing.assert_array_equal(predict_classes(model_with(None), {"x": x}, "p"), np.arange(10) % 3)
    assert calls == [10]
