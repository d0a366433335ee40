"""The ai-edge-litert engine: clean names, dynamic batch, validation before invoke, threads, failures,
and loading a .tflite without importing TensorFlow, torch or JAX."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import modelkit
from modelkit.core.data import test_split
from modelkit.errors import DTypeError, InputNameError, LoadError, ShapeError

ATOL = 1e-4  # fp32 TFLite vs Keras (the keras -> tflite edge's tolerance)


@pytest.fixture(scope="module")
def cnn_tflite(tmp_path_factory, cnn_tf) -> Path:
    (r,) = modelkit.convert(cnn_tf, "tflite", out_dir=tmp_path_factory.mktemp("litert"))
    return Path(r.path)


@pytest.mark.slow
def test_signature_has_clean_keras_names(cnn_tflite):
    m = modelkit.load(cnn_tflite)
    assert type(m).__name__ == "LiteRTModel" and m.format.value == "tflite"
    assert m.signature.input_names == ["image"] and m.signature.output_names == ["probs"]
    assert m.signature.inputs[0].shape == (None, 8, 8, 1) and m.signature.inputs[0].dtype == "float32"
    assert m.signature.outputs[0].shape == (None, 10)
    # the raw tensor names carry TF's prefixes; the engine maps them back
    raw = {d["name"] for d in m.interpreter.get_input_details()}
    assert raw == {"serving_default_image:0"}


def test_dynamic_batch_matches_keras(cnn_tflite, cnn_tf):
    lite, ref = modelkit.load(cnn_tflite), modelkit.load(cnn_tf)
    inputs, labels = test_split("digits", "cnn")
    for batch in (1, 5, 32, 5):  # growing and shrinking: tensors are resized when the batch changes
        feed = inputs["image"][:batch]
        out = lite.predict(feed)["probs"]
        assert out.shape == (batch, 10)
        np.testing.assert_allclose(out, ref.predict(feed)["probs"], atol=ATOL)
    acc = float((lite.predict(inputs)["probs"].argmax(-1) == labels).mean())  # 360 at once
    assert acc >= 0.9


def test_bad_inputs_rejected_before_invoke(cnn_tflite):
    m = modelkit.load(cnn_tflite)
    good = np.zeros((2, 8, 8, 1), np.float32)
    with pytest.raises(ShapeError, match=r"dimension 1 must be 8"):
        m.predict({"image": np.zeros((2, 9, 8, 1), np.float32)})
    with pytest.raises(ShapeError, match="expected rank 4"):
        m.predict({"image": np.zeros((8, 8, 1), np.float32)})
    with pytest.raises(DTypeError, match="expected dtype float32, got float64"):
        m.predict({"image": good.astype(np.float64)})
    with pytest.raises(InputNameError, match=r"missing \['image'\].*unexpected \['serving_default_image:0'\]"):
        m.predict({"serving_default_image:0": good})
    with pytest.raises(ShapeError, match="empty tensor"):
        m.predict({"image": np.zeros((0, 8, 8, 1), np.float32)})
    # the interpreter was never touched: it still runs, and results are copies, not views of its buffers
    first = m.predict(good)["probs"]
    first[:] = -1
    assert np.all(m.predict(good)["probs"] >= 0)


def test_threads_option_and_repr(cnn_tflite):
    m = modelkit.load(cnn_tflite, threads=1)
    x = test_split("digits", "cnn")[0]["image"][:3]
    np.testing.assert_allclose(m.predict(x)["probs"], modelkit.load(cnn_tflite).predict(x)["probs"], atol=1e-6)
    assert "via ai-edge-litert" in repr(m)
    with pytest.raises(LoadError, match="not supported by this engine"):
        modelkit.load(cnn_tflite, device="cuda")


def test_corrupt_file_is_a_load_error(tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\x1c\x00\x00\x00TFL3" + b"\x00" * 200)  # right magic, garbage body
    with pytest.raises(LoadError, match="not a valid TFLite model"):  # modelkit.safety.tflite, before the engine
        modelkit.load(bad)


def test_loading_tflite_imports_no_framework(cnn_tflite):
    code = (f"import sys, modelkit; m = modelkit.load({str(cnn_tflite)!r}); "
            "import numpy as np; out = m.predict(np.zeros((2, 8, 8, 1), np.float32)); "
            "import json; print(json.dumps([out['probs'].shape, "
            "[k for k in ('tensorflow', 'torch', 'jax', 'keras') if k in sys.modules]]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    shape, heavy = json.loads(proc.stdout.strip().splitlines()[-1])
    assert shape == [2, 10] and heavy == []
    assert "XNNPACK" not in proc.stderr and "INFO:" not in proc.stderr, proc.stderr  # the engine's own notice


def test_a_call_the_engine_fails_leaves_the_model_usable_at_other_sizes(tmp_path):
    """A row of padding only fails an int8 masked mean (TFLite's DIV by a zero count). The failed call's frame,
    kept alive by the exception's traceback, held the interpreter's C++ object, so every later call at another
    batch size failed too ("There is at least 1 reference to internal data"): a server keeps such errors."""
    from tests.helpers import masked_mean_int8_tflite

    path, model = masked_mean_int8_tflite(tmp_path / "reviews.tflite")
    m = modelkit.load(path)
    with pytest.raises(LoadError, match="DIV") as kept:
        m.predict({"ids": np.zeros((2, 6), np.int32)})
    assert kept.value.__traceback__ is not None
    ids = np.random.default_rng(0).integers(1, 10, (5, 6)).astype(np.int32)
    (got,) = m.predict({"ids": ids}).values()
    np.testing.assert_allclose(got, model.predict(ids, verbose=0), atol=0.1)
