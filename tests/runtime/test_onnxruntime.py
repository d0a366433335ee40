import subprocess
import sys
import textwrap

import numpy as np
import pytest

import modelkit
from modelkit.errors import DTypeError, InputNameError, LoadError, ShapeError, UnsafeModelError
from tests.helpers import make_tiny_onnx


def test_predict_matches_numpy(tiny_onnx):
    import onnx
    from onnx import numpy_helper

    m = modelkit.load(tiny_onnx)
    assert m.signature.input_names == ["x"] and m.signature.inputs[0].shape == (None, 4)
    assert m.signature.output_names == ["probs"]
    init = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(tiny_onnx)).graph.initializer}
    x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    logits = x @ init["W"] + init["b"]
    expected = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    got = m.predict(x)["probs"]
    assert got.shape == (5, 3)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    np.testing.assert_allclose(m.predict({"x": x})["probs"], got)


@pytest.mark.parametrize("bad, err, msg", [
    ({"y": np.zeros((1, 4), np.float32)}, InputNameError, r"missing \['x'\]"),
    ({"x": np.zeros((1, 5), np.float32)}, ShapeError, "dimension 1 must be 4"),
    ({"x": np.zeros((4,), np.float32)}, ShapeError, "expected rank 2"),
    ({"x": np.zeros((1, 4), np.int64)}, DTypeError, "expected dtype float32, got int64"),
])
def test_bad_inputs_are_typed_errors(tiny_onnx, bad, err, msg):
    with pytest.raises(err, match=msg):
        modelkit.load(tiny_onnx).predict(bad)


def test_threads_and_devices(tiny_onnx):
    assert modelkit.load(tiny_onnx, threads=1).predict(np.ones((1, 4), np.float32))["probs"].shape == (1, 3)
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(LoadError, match="CUDA execution provider"):
            modelkit.load(tiny_onnx, device="cuda")
    with pytest.raises(LoadError, match="valid devices: cpu, cuda"):
        modelkit.load(tiny_onnx, device="tpu")


def test_corrupt_file_is_a_load_error(tmp_path, tiny_onnx):
    data = tiny_onnx.read_bytes()
    trunc = tmp_path / "trunc.onnx"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(LoadError):
        modelkit.load(trunc)


def point_external(path, location):
    import onnx

    model = onnx.load(str(path))
    for t in model.graph.initializer:
        del t.external_data[:]
        entry = t.external_data.add()
        entry.key, entry.value = "location", location
        t.data_location = onnx.TensorProto.EXTERNAL
        t.ClearField("raw_data")
    onnx.save(model, str(path))


@pytest.mark.parametrize("location, msg", [
    ("/etc/passwd", "absolute location '/etc/passwd'"),
    ("../../secret.bin", r"contains '\.\.'"),
    ("link/weights.bin", "goes through a symlink"),
])
def test_external_data_outside_the_folder_is_refused(tmp_path, location, msg):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "weights.bin").write_bytes(b"\0" * 64)
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    path = make_tiny_onnx(tmp_path / "ext.onnx")
    point_external(path, location)
    with pytest.raises(UnsafeModelError, match=msg):
        modelkit.load(path)


def test_loading_onnx_imports_no_framework(tiny_onnx):
    code = textwrap.dedent(f"""
        import sys, time
        t = time.perf_counter()
        import modelkit, modelkit.runtime
        import numpy as np
        m = modelkit.load({str(tiny_onnx)!r})
        m.predict(np.ones((2, 4), np.float32))
        heavy = [n for n in ("tensorflow", "torch", "jax", "keras", "rich") if n in sys.modules]
        print("HEAVY", heavy)  # rich too: it draws progress bars, imported only to draw one
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout


def test_cli_help_imports_no_framework():
    code = ("import sys; from click.testing import CliRunner; from modelkit.cli import main; "
            "r = CliRunner().invoke(main, ['--help']); assert r.exit_code == 0; "
            "print([n for n in ('tensorflow', 'torch', 'jax', 'keras', 'onnxruntime', 'rich') if n in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr
