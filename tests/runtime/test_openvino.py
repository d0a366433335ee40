"""The OpenVINO engine: f32 pinned by default (OpenVINO's own CPU default is bf16 on AMX / AVX-512 bf16
machines), bf16 / throughput / threads as options, typed input errors, and hostile or damaged IRs refused
with a typed error before or while OpenVINO reads them."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import modelkit
from modelkit.cli import main
from modelkit.errors import DTypeError, FormatError, InputNameError, LoadError, ShapeError, UnsafeModelError
from modelkit.formats import Format, detect
from tests.serving.conftest import serve  # noqa: F401 - real `modelkit serve` processes on loopback

ov = pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install 'modelkit[openvino]')")


def _small_conv_onnx(path: Path) -> Path:
    """A small conv net (Conv 3x3 x8, ReLU, Conv 3x3 x8, global average pool, Gemm to 10), dynamic batch."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    w1 = rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.5
    w2 = rng.standard_normal((8, 8, 3, 3)).astype(np.float32) * 0.3
    fc = rng.standard_normal((10, 8)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c1"], ["r1"]),
         helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c2"], ["r2"]),
         helper.make_node("GlobalAveragePool", ["r2"], ["p"]), helper.make_node("Flatten", ["p"], ["f"]),
         helper.make_node("Gemm", ["f", "fc"], ["logits"], transB=1)],
        "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 16, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"), numpy_helper.from_array(fc, "fc")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path


@pytest.fixture(scope="module")
def conv(tmp_path_factory) -> tuple[Path, Path]:
    """(the ONNX conv net, its OpenVINO IR folder made by modelkit convert, parity checked)."""
    folder = tmp_path_factory.mktemp("ov_conv")
    src = _small_conv_onnx(folder / "conv.onnx")
    (r,) = modelkit.convert(src, "openvino", out_dir=folder)
    assert r.parity["ok"]
    return src, Path(r.path)


def test_f32_is_pinned_by_default_and_matches_onnxruntime(conv):
    src, art = conv
    model = modelkit.load(art)
    assert model.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name() == "f32"
    assert model.config["INFERENCE_PRECISION_HINT"] == "f32" and model.config["PERFORMANCE_HINT"] == "LATENCY"
    assert str(model.compiled.get_property("PERFORMANCE_HINT")) == "LATENCY"
    ort = modelkit.load(src)
    x = np.random.default_rng(0).standard_normal((7, 3, 16, 16)).astype(np.float32)
    assert np.abs(model.predict(x)["logits"] - ort.predict(x)["logits"]).max() <= 1e-5


def test_bf16_throughput_and_threads_are_options(conv):
    _, art = conv
    from modelkit.runtime.openvino import cpu_capabilities

    model = modelkit.load(art, precision="bf16", hint="throughput", threads=1)
    # what OpenVINO runs: bf16 where the CPU computes in it (AVX512_BF16 / AMX), f32 where it ignores the hint
    assert model.precision == ("bf16" if "BF16" in cpu_capabilities() else "f32")
    assert str(model.compiled.get_property("PERFORMANCE_HINT")) == "THROUGHPUT"
    assert model.compiled.get_property("INFERENCE_NUM_THREADS") == 1
    assert model.predict(np.ones((2, 3, 16, 16), np.float32))["logits"].shape == (2, 10)
    with pytest.raises(LoadError, match="unknown OpenVINO precision 'int3'; valid: f32"):
        modelkit.load(art, precision="int3")
    with pytest.raises(LoadError, match="performance hint 'fastest'"):
        modelkit.load(art, hint="fastest")
    with pytest.raises(LoadError, match="not supported by this engine"):
        modelkit.load(art, device="cuda")


def test_dynamic_batch_and_typed_input_errors(conv):
    _, art = conv
    model = modelkit.load(art)
    assert model.signature.inputs[0].shape == (None, 3, 16, 16) and model.signature.output_names == ["logits"]
    for batch in (1, 7):
        assert model.predict({"x": np.zeros((batch, 3, 16, 16), np.float32)})["logits"].shape == (batch, 10)
    with pytest.raises(InputNameError, match="unexpected \\['image'\\]"):
        model.predict({"image": np.zeros((1, 3, 16, 16), np.float32)})
    with pytest.raises(ShapeError):
        model.predict(np.zeros((1, 3, 15, 16), np.float32))
    with pytest.raises(ShapeError):
        model.predict(np.zeros((3, 16, 16), np.float32))
    with pytest.raises(DTypeError):
        model.predict(np.zeros((1, 3, 16, 16), np.int64))


def test_a_bare_ir_made_elsewhere_loads_from_its_xml(conv, tmp_path):
    src, _ = conv
    model = ov.convert_model(str(src))
    ov.save_model(model, str(tmp_path / "net.xml"), compress_to_fp16=False)
    assert detect(tmp_path / "net.xml") == Format.OPENVINO
    got = modelkit.load(tmp_path / "net.xml").predict(np.ones((1, 3, 16, 16), np.float32))["logits"]
    assert np.abs(got - modelkit.load(src).predict(np.ones((1, 3, 16, 16), np.float32))["logits"]).max() <= 1e-5
    (tmp_path / "net.bin").unlink()
    with pytest.raises(LoadError, match="net.bin: missing"):
        modelkit.load(tmp_path / "net.xml")


def _copy(art: Path, tmp_path: Path) -> Path:
    dest = tmp_path / art.name
    shutil.copytree(art, dest)
    return dest


def test_corrupt_xml_and_truncated_bin_are_load_errors_and_one_line_on_the_cli(conv, tmp_path):
    _, art = conv
    bad = _copy(art, tmp_path / "xml")
    xml = (bad / "model.xml").read_text()
    (bad / "model.xml").write_text(xml[: len(xml) // 2])  # still starts with <net>, no longer well-formed
    with pytest.raises(LoadError, match="not a well-formed OpenVINO IR graph"):
        modelkit.load(bad)
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((1, 3, 16, 16), np.float32))
    r = CliRunner().invoke(main, ["run", str(bad), "--input", str(x)])
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "not a well-formed OpenVINO IR graph" in r.stderr

    short = _copy(art, tmp_path / "bin")
    data = (short / "model.bin").read_bytes()
    (short / "model.bin").write_bytes(data[: len(data) - 100])
    with pytest.raises(LoadError, match="truncated, or the .bin of another model"):
        modelkit.load(short)
    r = CliRunner().invoke(main, ["inspect", str(short)])
    assert r.exit_code in (0, 2)  # inspect reads the manifest; a load, if any, fails typed
    r = CliRunner().invoke(main, ["run", str(short), "--input", str(x)])
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "truncated" in r.stderr

    # an op OpenVINO does not know: its own error, typed
    unknown = _copy(art, tmp_path / "op")
    (unknown / "model.xml").write_text(xml.replace('type="ReLU"', 'type="NoSuchOp"', 1))
    with pytest.raises(LoadError, match="OpenVINO could not load this model: Opset opset1 doesn't contain the "
                                        "operation with type: NoSuchOp"):
        modelkit.load(unknown)


def test_hostile_irs_are_refused_before_openvino_reads_them(conv, tmp_path):
    _, art = conv
    xml = (art / "model.xml").read_text()

    dtd = _copy(art, tmp_path / "dtd")
    (dtd / "model.xml").write_text('<?xml version="1.0"?>\n<!DOCTYPE net [<!ENTITY a "aaaaaaaaaa">'
                                   '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>\n' + xml.split("\n", 1)[1])
    with pytest.raises(UnsafeModelError, match="declares a DTD"):
        modelkit.load(dtd)

    outside = tmp_path / "elsewhere.bin"
    shutil.copy2(art / "model.bin", outside)
    link = _copy(art, tmp_path / "link")
    (link / "model.bin").unlink()
    os.symlink(outside, link / "model.bin")
    with pytest.raises(UnsafeModelError, match="symlink"):
        modelkit.load(link)

    huge = _copy(art, tmp_path / "huge")
    (huge / "model.xml").write_text(xml.replace('shape="?,3,16,16"', 'shape="?,3,1048576,1048576"', 1)
                                    .replace('element_type="f32" shape="8, 3, 3, 3"',
                                             'element_type="f32" shape="1048576, 1048576, 3, 3"', 1))
    with pytest.raises(UnsafeModelError, match=r"declares shape \[1048576, 1048576, 3, 3\], more than"):
        modelkit.load(huge)

    lying = _copy(art, tmp_path / "offset")
    (lying / "model.xml").write_text(xml.replace('offset="0"', 'offset="-8"', 1))
    with pytest.raises(LoadError, match="offset='-8' is not a non-negative integer"):
        modelkit.load(lying)

    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(FormatError, match="nor an OpenVINO IR"):
        modelkit.load(tmp_path / "empty_dir")
    with pytest.raises(FormatError, match="not a model file"):
        (tmp_path / "notes.xml").write_text('<?xml version="1.0"?>\n<notes/>\n')
        modelkit.load(tmp_path / "notes.xml")


def test_modelkit_serve_takes_an_ir_folder_and_a_repository_of_them(conv, serve, tmp_path):  # noqa: F811
    from tests.helpers import call, v2_request

    src, art = conv
    x = np.random.default_rng(3).standard_normal((2, 3, 16, 16)).astype(np.float32)
    want = modelkit.load(src).predict(x)["logits"]
    repo = tmp_path / "repo"
    shutil.copytree(art, repo / "netv" / "1")  # a VERSION folder that is the IR itself, as for a SavedModel
    server = serve(art, repo)
    status, meta = call(server.port, "GET", "/v2/models/conv")  # named after the folder, without _openvino
    assert status == 200 and meta["platform"] == "openvino", meta
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 3, 16, 16]}]
    for name in ("conv", "netv"):
        status, resp = call(server.port, "POST", f"/v2/models/{name}/infer", v2_request(x))
        assert status == 200, resp
        got = np.reshape(resp["outputs"][0]["data"], (2, 10))
        assert np.abs(got - want).max() <= 1e-5


def test_an_input_cast_on_entry_keeps_its_name(tmp_path):
    """nc32: torch.onnx casts a tagger's int32 ids to int64 ('_to_copy'); OpenVINO's CPU plugin folds that Cast into
    the input when compiling, and the compiled port took the Cast's name: every call failed on 'tokens'."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    table = np.arange(20, dtype=np.float32).reshape(10, 2)
    graph = helper.make_graph(
        [helper.make_node("Cast", ["tokens"], ["_to_copy"], to=TensorProto.INT64),
         helper.make_node("Gather", ["table", "_to_copy"], ["vectors"])],
        "ids", [helper.make_tensor_value_info("tokens", TensorProto.INT32, ["batch", 3])],
        [helper.make_tensor_value_info("vectors", TensorProto.FLOAT, ["batch", 3, 2])],
        [numpy_helper.from_array(table, "table")])
    src = tmp_path / "ids.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(src))
    from modelkit.runtime.openvino import core  # one Core per process: see the module's docstring

    compiled = core().compile_model(ov.convert_model(str(src)), "CPU")
    assert "_to_copy" in compiled.inputs[0].get_names()  # what the name is kept from (else the test proves nothing)
    (r,) = modelkit.convert(src, "openvino", out_dir=tmp_path)
    assert r.parity["ok"]
    m = modelkit.load(r.path)
    assert m.signature.input_names == ["tokens"] and m.signature.output_names == ["vectors"]
    ids = np.array([[1, 0, 9]], np.int32)
    assert m.predict({"tokens": ids})["vectors"].tolist() == table[ids].tolist()


_OUT_OF_ORDER = """
import gc, signal, sys
import modelkit
first, second = modelkit.load(sys.argv[1]), modelkit.load(sys.argv[1])
del first; gc.collect()
del second; gc.collect()  # the second's Core put back the first one's alternate signal stack, already freed
got = []
signal.signal(signal.SIGINT, lambda *_: got.append(1))
signal.raise_signal(signal.SIGINT)  # Ctrl-C, or a server's SIGTERM: the handler runs on that stack
print("handled", len(got))
"""


def test_models_dropped_out_of_order_leave_signal_handling_working(conv):
    """OpenVINO's CPU plugin gives the thread that first compiles on a Core an alternate signal stack, and puts back
    the one it found when the Core goes. With a Core per model, models dropped out of load order (a server swapping
    versions) left the thread on a freed stack: the next Python signal handler (Ctrl-C, SIGTERM) died of SIGSEGV."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _OUT_OF_ORDER, str(conv[1])], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONFAULTHANDLER": "1"})
    assert proc.returncode == 0 and proc.stdout.split() == ["handled", "1"], (proc.returncode, proc.stderr[-2000:])
