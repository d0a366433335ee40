"""`modelkit compile MODEL.keras --input-spec`: TVM's importer needs a fixed sequence length for attention, and its
error said to pass --input-spec, which compile did not take ('No such option'; found on a JAX attention classifier
over token ids of open length). The spec fixes the inputs on the way to ONNX; an ONNX source is refused."""
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


def test_input_spec_on_an_onnx_source_is_refused(tmp_path):
    from tests.helpers.models import make_tiny_onnx

    src = make_tiny_onnx(tmp_path / "tiny.onnx")
    res = CliRunner().invoke(main, ["compile", str(src), "--input-spec", "x:?,4", "--out", str(tmp_path)])
    assert res.exit_code == 2
    assert "error: --input-spec applies to a .keras source; tiny.onnx is ONNX" in res.output
    assert "Traceback" not in res.output


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
