"""`modelkit compile MODEL.keras --input-spec`: TVM's importer needs a fixed sequence length for attention, and its
error said to pass --input-spec, which compile did not take ('No such option'; found on a JAX attention classifier
over token ids of open length). The spec fixes the inputs on the way to ONNX; an ONNX source's in its graph."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from modelkit.cli import main

pytest.importorskip("tvm", reason="TVM is not installed (pip install 'modelkit[tvm]')")


@pytest.fixture(scope="module")
def attention_keras(tmp_path_factory):
    """Token ids of open length -> Embedding -> self-attention -> average -> Dense."""
    from modelkit._backend import import_keras

    keras = import_keras("tensorflow")
    keras.utils.set_random_seed(0)
    ids = keras.Input((None,), dtype="int32", name="tokens")
    e = keras.layers.Embedding(18, 8)(ids)
    a = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4)(e, e)
    out = keras.layers.Dense(3, name="probs")(keras.layers.GlobalAveragePooling1D()(a))
    path = tmp_path_factory.mktemp("attn") / "attn.keras"
    keras.Model(ids, out).save(path)
    return path


def test_compile_fixes_an_open_length_with_input_spec(attention_keras, tmp_path):
    res = CliRunner().invoke(main, ["-q", "compile", str(attention_keras), "--input-spec", "tokens:?,8:int32",
                                    "--out", str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.stdout)
    assert got["parity"]["ok"]
    with open(got["path"] + ".modelkit.json") as f:
        inputs = json.load(f)["signature"]["inputs"]
    assert [i["shape"][1:] for i in inputs] == [[8]]


def test_an_onnx_source_gets_its_open_length_fixed_in_the_graph(attention_keras, tmp_path):
    """nc69: an ONNX of a model of any image size (made by torch.onnx, or another tool) could not be fixed at all:
    '--input-spec applies to a .keras source', while TVM's refusal said to pass it."""
    runner = CliRunner()
    assert runner.invoke(main, ["-q", "convert", str(attention_keras), "--to", "onnx", "--out", str(tmp_path)]) \
        .exit_code == 0
    onnx = tmp_path / "attn.onnx"
    res = runner.invoke(main, ["-q", "compile", str(onnx), "--out", str(tmp_path / "open.tvm.so")])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "fix it with --input-spec tokens:?,64:int32 (modelkit compile attn.onnx or MODEL.keras" in res.output
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
def test_an_input_spec_that_does_not_fit_the_onnx_is_refused(tmp_path, spec, message):
    from tests.helpers.models import make_tiny_onnx

    src = make_tiny_onnx(tmp_path / "tiny.onnx")
    res = CliRunner().invoke(main, ["compile", str(src), "--input-spec", spec, "--out", str(tmp_path)])
    assert res.exit_code == 2
    assert message in res.output, res.output
    assert "Traceback" not in res.output and not list(tmp_path.glob("*.tvm.so"))


def test_an_onnx_converted_without_the_spec_is_not_overwritten_and_the_error_says_why(attention_keras, tmp_path):
    """Following TVM's hint after a compile without the spec (its ONNX left beside the model): convert's refusal
    ('attn.onnx exists; pass --force') did not say that the spec is why a new ONNX is needed."""
    runner = CliRunner()
    assert runner.invoke(main, ["-q", "convert", str(attention_keras), "--to", "onnx", "--out", str(tmp_path)]) \
        .exit_code == 0
    onnx = tmp_path / "attn.onnx"
    before = onnx.read_bytes()
    args = ["-q", "compile", str(attention_keras), "--input-spec", "tokens:?,8:int32", "--out", str(tmp_path)]
    res = runner.invoke(main, args)
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert ("error: attn.onnx was converted from attn.keras with its own inputs (no --input-spec), this compile "
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


def test_a_torch_onnx_of_any_image_size_says_to_fix_its_sides_and_compiles_when_fixed(tmp_path):
    """nc72: a user's own torch.onnx export (a denoiser: PixelUnshuffle, two convolutions, PixelShuffle; height and
    width as dynamic axes). The importer took it and the build failed "tvm.compile failed for llvm: InternalError:
    CodeGenVM cannot emit this Relax operator directly", naming neither the open sides nor the fix."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    body = torch.nn.Sequential(torch.nn.PixelUnshuffle(2), torch.nn.Conv2d(12, 8, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.Conv2d(8, 12, 3, padding=1), torch.nn.PixelShuffle(2)).eval()
    onnx = tmp_path / "denoiser.onnx"
    torch.onnx.export(body, (torch.rand(1, 3, 16, 16),), str(onnx), input_names=["img"], output_names=["clean"],
                      dynamic_axes={"img": {0: "n", 2: "h", 3: "w"}, "clean": {0: "n", 2: "h2", 3: "w2"}},
                      dynamo=False)
    runner = CliRunner()
    res = runner.invoke(main, ["-q", "compile", str(onnx), "--out", str(tmp_path / "open.tvm.so")])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "error: TVM could not build denoiser.onnx, whose dimension 'img' dim 2 is dynamic (" in res.output
    assert "fix it with --input-spec img:?,3,64,64:float32 (modelkit compile denoiser.onnx" in res.output
    assert not (tmp_path / "open.tvm.so").exists()
    res = runner.invoke(main, ["-q", "compile", str(onnx), "--input-spec", "img:?,3,24,40", "--json",
                               "--out", str(tmp_path / "fixed.tvm.so")])
    assert res.exit_code == 0, res.output
    got = json.loads(res.stdout)
    assert got["parity"]["ok"] and got["batch"] is None  # the sides fixed, the batch kept open
