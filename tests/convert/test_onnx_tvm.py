"""Edge onnx -> tvm: compile the trained CNN's ONNX and the tiny ONNX on CPU; parity against onnxruntime."""
import json
import os
from pathlib import Path

import numpy as np
import pytest

import modelkit
from modelkit.converters.registry import edges
from modelkit.formats import Format

pytest.importorskip("tvm")


def test_edge_is_registered_without_backend():
    e = edges()[(Format.ONNX, Format.TVM)]
    assert e.backend is None and e.options["target"] == "server-cpu" and e.tolerance.atol == 1e-4


def test_cnn_onnx_to_tvm_parity(converted, tmp_path):
    onnx_path = converted["tensorflow"]["onnx"]
    (r,) = modelkit.convert(onnx_path, "tvm", out_dir=tmp_path)
    assert r.format == "tvm" and Path(r.path).name == "cnn_tf.tvm.so"
    assert r.parity["ok"] and [c["batch"] for c in r.parity["cases"]] == [1, 7]
    assert r.max_abs < 1e-4
    # the edge verified on seeded inputs; check real digits against onnxruntime too, by name
    from modelkit.core.data import test_split

    inputs, labels = test_split("digits", "cnn", 0)
    ort, lib = modelkit.load(onnx_path), modelkit.load(r.path)
    x = {"image": inputs["image"][:64]}
    got, want = lib.predict(x)["probs"], ort.predict(x)["probs"]
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert (got.argmax(-1) == want.argmax(-1)).all()
    assert (got.argmax(-1) == labels[:64]).mean() > 0.5  # a trained model, not noise


@pytest.mark.slow
def test_keras_source_compiles_through_the_planner_reusing_onnx(converted, cnn_tf):
    from modelkit.targets import compile

    folder = converted["tensorflow"]["onnx"].parent
    onnx_mtime = converted["tensorflow"]["onnx"].stat().st_mtime_ns
    result = compile(cnn_tf, target="server-cpu", out=folder, batch=2)
    assert Path(result.onnx) == converted["tensorflow"]["onnx"]
    assert converted["tensorflow"]["onnx"].stat().st_mtime_ns == onnx_mtime  # reused, not converted again
    assert result.parity["ok"] and {c["batch"] for c in result.parity["cases"]} == {2}
    manifest = json.loads(Path(result.path + ".modelkit.json").read_text())
    assert manifest["signature"]["inputs"][0] == {"name": "image", "shape": [2, 8, 8, 1], "dtype": "float32"}
    assert manifest["extra"]["batch"] == 2 and manifest["training"]["data"] == "digits"


def test_tiny_onnx_tvm_parity_dynamic_batch(tiny_onnx):
    (r,) = modelkit.convert(tiny_onnx, "tvm")
    assert r.parity["ok"] and r.max_abs < 1e-5
    m = modelkit.load(r.path)
    assert m.signature.inputs[0].shape == (None, 4)


def test_server_gpu_compiles_without_nvcc_where_no_gpu_is(tiny_onnx, tmp_path, monkeypatch):
    """Without a GPU here TVM stores the kernels' source (the GPU server compiles them at load): the CUDA toolkit
    is not needed to build, though this target once refused without nvcc."""
    from modelkit.errors import LoadError
    from modelkit.runtime.tvm_host import tvm_cuda_missing
    from modelkit.targets import compile

    if tvm_cuda_missing() is None:
        pytest.skip("a GPU machine: TVM compiles the kernels here (tests/targets/test_gpu.py)")
    monkeypatch.setenv("PATH", ":".join(d for d in os.environ["PATH"].split(":") if not Path(d, "nvcc").exists()))
    result = compile(tiny_onnx, target="server-gpu", out=tmp_path / "tiny.server-gpu.tvm.so")
    assert result.parity is None and result.verified.startswith("compiled-only") and result.batch == 1
    assert "its CUDA kernels compile there, at load" in result.verified
    assert b"__global__" in Path(result.path).read_bytes()  # the kernels, as CUDA source
    m = modelkit.load(result.path, device="cuda")
    with pytest.raises(LoadError, match="not available|CUDA"):
        m.predict(np.zeros((1, 4), np.float32))


def test_compile_out_is_a_library_name_or_a_folder_created_as_convert_does(tiny_onnx, tmp_path):
    from click.testing import CliRunner

    from modelkit.cli import main
    from modelkit.targets import default_output, get

    tgt = get("server-cpu")
    assert default_output(tiny_onnx, tgt, tmp_path / "lib" / "x.tvm.so") == tmp_path / "lib" / "x.tvm.so"
    assert default_output(tiny_onnx, tgt, tmp_path / "new") == tmp_path / "new" / "tiny.server-cpu.tvm.so"
    result = CliRunner().invoke(main, ["compile", str(tiny_onnx), "--out", str(tmp_path / "new" / "dir")])
    assert result.exit_code == 0, result.output
    lib = tmp_path / "new" / "dir" / "tiny.server-cpu.tvm.so"
    assert lib.is_file() and modelkit.load(lib).signature.inputs[0].name == "x"


def test_an_out_ending_in_so_but_not_tvm_so_is_refused_before_any_work(tiny_onnx, tmp_path):
    """`--out cnn.so` made a folder named cnn.so holding cnn.server-cpu.tvm.so."""
    from modelkit.errors import OutputPathError
    from tests.helpers.cli import one_line_error

    with pytest.raises(OutputPathError, match=r"--out .*cnn\.so: a TVM library's name ends with \.tvm\.so .*"
                                              r"pass --out .*cnn\.tvm\.so, or a folder for it$"):
        modelkit.compile(tiny_onnx, "server-cpu", out=tmp_path / "cnn.so")
    line = one_line_error(["compile", str(tiny_onnx), "--out", str(tmp_path / "m.so")])
    assert "pass --out" in line and line.rstrip().endswith("or a folder for it")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.onnx"]
