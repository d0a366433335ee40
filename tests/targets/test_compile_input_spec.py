"""`modelkit compile MODEL.keras --input-spec`: TVM's importer needed a fixed sequence length for attention (now
for a dilated `same` convolution), and its error said to pass --input-spec, which compile did not take ('No such
option'; found on a JAX attention classifier over token ids of open length). The spec fixes the inputs on the way
to ONNX; an ONNX source's in its graph."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from modelkit.cli import main
from tests.helpers.models import torch_denoiser_onnx

pytest.importorskip("tvm", reason="TVM is not installed (pip install 'modelkit[tvm]')")


@pytest.fixture(scope="module")
def open_length_keras(tmp_path_factory):
    """Token ids of open length -> Embedding -> a dilated `same` Conv1D -> average -> Dense. tf2onnx writes the
    dilation as SpaceToBatchND, whose pads it computes from the length, which TVM's importer cannot take, so this
    model needs --input-spec. (Until sizes.py a causal self-attention was this subject, until same_pads.py a
    strided `same` Conv1D; TVM compiles both at an open length now.)"""
    from modelkit._backend import import_keras

    keras = import_keras("tensorflow")
    keras.utils.set_random_seed(0)
    ids = keras.Input((None,), dtype="int32", name="tokens")
    e = keras.layers.Embedding(18, 8)(ids)
    h = keras.layers.Conv1D(8, 3, dilation_rate=2, padding="same")(e)
    out = keras.layers.Dense(3, name="probs")(keras.layers.GlobalAveragePooling1D()(h))
    path = tmp_path_factory.mktemp("conv") / "conv.keras"
    keras.Model(ids, out).save(path)
    return path


@pytest.mark.slow
def test_compile_fixes_an_open_length_with_input_spec(open_length_keras, tmp_path):
    res = CliRunner().invoke(main, ["-q", "compile", str(open_length_keras), "--input-spec", "tokens:?,8:int32",
                                    "--out", str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.stdout)
    assert got["parity"]["ok"]
    with open(got["path"] + ".modelkit.json") as f:
        inputs = json.load(f)["signature"]["inputs"]
    assert [i["shape"][1:] for i in inputs] == [[8]]


@pytest.mark.slow
def test_an_onnx_source_gets_its_open_length_fixed_in_the_graph(open_length_keras, tmp_path):
    """nc69: an ONNX of a model of any image size (made by torch.onnx, or another tool) could not be fixed at all:
    '--input-spec applies to a .keras source', while TVM's refusal said to pass it."""
    runner = CliRunner()
    assert runner.invoke(main, ["-q", "convert", str(open_length_keras), "--to", "onnx", "--out", str(tmp_path)]) \
        .exit_code == 0
    onnx = tmp_path / "conv.onnx"
    res = runner.invoke(main, ["-q", "compile", str(onnx), "--out", str(tmp_path / "open.tvm.so")])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "fix it with --input-spec tokens:?,64:int32 (modelkit compile conv.onnx or MODEL.keras" in res.output
    res = runner.invoke(main, ["-q", "compile", str(onnx), "--input-spec", "tokens:?,8:int32", "--json",
                               "--out", str(tmp_path / "fixed.tvm.so")])
    assert res.exit_code == 0, res.output
    got = json.loads(res.stdout)
    assert got["parity"]["ok"]
    with open(got["path"] + ".modelkit.json") as f:
        manifest = json.load(f)
    assert [i["shape"][1:] for i in manifest["signature"]["inputs"]] == [[8]]
    assert manifest["extra"]["input_spec"] == [{"name": "tokens", "shape": [None, 8], "dtype": "int32"}]
    assert got["batch"] == manifest["extra"]["batch"]  # the batch the library has (1 where TVM fell back to it)


@pytest.mark.parametrize("spec, message", [
    ("z:?,4", "error: --input-spec names 'z', which is not an input of tiny.onnx; its inputs: x"),
    ("x:?,4,2", "error: --input-spec gives 'x' 3 dimensions; in tiny.onnx it has 2"),
    ("x:?,5", "error: --input-spec sets dimension 1 of 'x' to 5; tiny.onnx fixes it at 4"),
])
@pytest.mark.slow
def test_an_input_spec_that_does_not_fit_the_onnx_is_refused(tmp_path, spec, message):
    from tests.helpers.models import make_tiny_onnx

    src = make_tiny_onnx(tmp_path / "tiny.onnx")
    res = CliRunner().invoke(main, ["compile", str(src), "--input-spec", spec, "--out", str(tmp_path)])
    assert res.exit_code == 2
    assert message in res.output, res.output
    assert "Traceback" not in res.output and not list(tmp_path.glob("*.tvm.so"))


@pytest.mark.slow
def test_an_onnx_converted_without_the_spec_is_not_overwritten_and_the_error_says_why(open_length_keras, tmp_path):
    """Following TVM's hint after a compile without the spec (its ONNX left beside the model): convert's refusal
    ('conv.onnx exists; pass --force') did not say that the spec is why a new ONNX is needed."""
    runner = CliRunner()
    assert runner.invoke(main, ["-q", "convert", str(open_length_keras), "--to", "onnx", "--out", str(tmp_path)]) \
        .exit_code == 0
    onnx = tmp_path / "conv.onnx"
    before = onnx.read_bytes()
    args = ["-q", "compile", str(open_length_keras), "--input-spec", "tokens:?,8:int32", "--out", str(tmp_path)]
    res = runner.invoke(main, args)
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert ("error: conv.onnx was converted from conv.keras with its own inputs (no --input-spec), this compile "
            "asks for --input-spec tokens:?,8:int32; pass --force") in res.output
    assert onnx.read_bytes() == before
    res = runner.invoke(main, [*args, "--force"])
    assert res.exit_code == 0, res.output
    assert onnx.read_bytes() != before


def test_convert_refuses_an_input_spec_for_an_onnx_source(tmp_path):
    """`modelkit convert tiny.onnx --to openvino --input-spec x:?,9` wrote a model of 4 features and said nothing:
    the spec shapes how a .keras model is loaded, and was ignored for any other source."""
    from tests.helpers.models import make_tiny_onnx

    src = make_tiny_onnx(tmp_path / "tiny.onnx")
    res = CliRunner().invoke(main, ["convert", str(src), "--to", "openvino", "--input-spec", "x:?,9",
                                    "--out", str(tmp_path / "out")])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert ("error: --input-spec fixes the inputs of a .keras source; tiny.onnx is onnx, whose inputs are what its "
            "file says; to fix an ONNX model's open dimensions for TVM: modelkit compile tiny.onnx --input-spec") \
        in res.output, res.output
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


@pytest.mark.slow
def test_a_torch_onnx_of_any_image_size_compiles_with_its_sides_open(tmp_path):
    """nc72: a user's own torch.onnx export (a denoiser: PixelUnshuffle, two convolutions, PixelShuffle; height and
    width as dynamic axes). TVM's build ran for over 20 minutes (the default schedule fused three symbolic loops:
    see test_tvm_default_schedule), and parity then found one size both models ran at, since the model takes even
    sides only (the error named sizes 1, 13, 29, ...), with onnxruntime's own error lines on stderr."""
    pytest.importorskip("torch")
    onnx = torch_denoiser_onnx(tmp_path / "denoiser.onnx")
    res = CliRunner().invoke(main, ["-q", "compile", str(onnx), "--json", "--out", str(tmp_path / "open.tvm.so")])
    assert res.exit_code == 0, res.output
    assert "[E:onnxruntime" not in res.output  # the reference's refusals of odd sides are skips, said in the report
    got = json.loads(res.stdout)
    assert got["parity"]["ok"] and got["batch"] is None
    for axis in ("2", "3"):  # the sides stay open, checked at three sizes each, multiples of 32 among them
        dim = got["parity"]["dynamic_dims"]["img"][axis]
        assert dim["dynamic"] and len(dim["sizes"]) == 3 and {32, 96, 160} & set(dim["sizes"]), dim


@pytest.mark.slow
def test_the_dynamo_exporters_onnx_of_any_size_is_refused_with_the_spec_that_fixes_it(tmp_path):
    """The same denoiser by torch.onnx's dynamo exporter: its sides go through shape arithmetic TVM's importer
    cannot take ("Node ... cannot handle ShapeExpr inputs"); the refusal names the open side and the fix."""
    pytest.importorskip("torch")
    onnx = torch_denoiser_onnx(tmp_path / "denoiser.onnx", dynamo=True)
    runner = CliRunner()
    res = runner.invoke(main, ["-q", "compile", str(onnx), "--out", str(tmp_path / "open.tvm.so")])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert ("error: TVM cannot compile denoiser.onnx, whose dimension 'img' dim 2 is dynamic: its ONNX importer "
            "rejected it (") in res.output
    assert "fix it with --input-spec img:?,3,64,64:float32 (modelkit compile denoiser.onnx" in res.output
    assert not (tmp_path / "open.tvm.so").exists()
    res = runner.invoke(main, ["-q", "compile", str(onnx), "--input-spec", "img:?,3,24,40", "--json",
                               "--out", str(tmp_path / "fixed.tvm.so")])
    assert res.exit_code == 0, res.output
    got = json.loads(res.stdout)
    assert got["parity"]["ok"] and got["batch"] is None  # the sides fixed, the batch kept open


def _reversed_over_time(path):
    """x (N, T, 3) reversed along time by ReverseSequence, the lengths from x's shape (tf2onnx's ops.flip over an
    open axis, nc88): TVM's importer cannot take the lengths as a shape expression."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Gather", ["s", "one"], ["t"], axis=0),
             helper.make_node("Gather", ["s", "zero"], ["n"], axis=0), helper.make_node("Expand", ["t", "n"], ["lens"]),
             helper.make_node("ReverseSequence", ["x", "lens"], ["y"], batch_axis=0, time_axis=1)]
    graph = helper.make_graph(nodes, "reverse", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "T", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "T", 3])],
                              [helper.make_tensor("one", TensorProto.INT64, [], [1]),
                               helper.make_tensor("zero", TensorProto.INT64, [1], [0])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_a_rejected_graph_leaves_no_tvm_warning_for_later(tmp_path, capfd):
    """TVM's importer, failing, leaves its BlockBuilder in the frames of the error; freed by a later collection (the
    child going on with another format), it wrote "Warning: BlockBuilder destroyed with remaining blocks!" to the
    user's terminal, between modelkit's lines. The frames are cleared while TVM's chatter is still swallowed."""
    import gc

    from modelkit.errors import UnsupportedConversionError
    from modelkit.targets.tvm.compile import compile_onnx

    src = _reversed_over_time(tmp_path / "reverse.onnx")
    with pytest.raises(UnsupportedConversionError, match="whose dimension 'x' dim 1 is dynamic"):
        compile_onnx(src, tmp_path / "reverse.tvm.so")
    gc.collect()
    assert "BlockBuilder" not in capfd.readouterr().err
    assert not (tmp_path / "reverse.tvm.so").exists()
