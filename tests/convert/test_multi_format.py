"""A conversion to several formats: one that fails or is refused does not stop the others; TVM compiles
graphs whose Reshape shapes are computed from the batch (attention) with a dynamic batch, their targets made
constant (modelkit/targets/tvm/reshapes.py); 3-D pooling reaches TFLite as 2-D pooling."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import modelkit
from modelkit import _child
from modelkit.cli import main
from modelkit.errors import UnsupportedConversionError
from modelkit.formats import manifest_path


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("multi")
    got = _child.run("tests.convert.multi_format_models:save", {"folder": str(folder)}, backend="tensorflow")
    return {k: Path(v) for k, v in got.items()}


@pytest.mark.slow
def test_a_format_refused_up_front_does_not_stop_the_others(models, tmp_path):
    with pytest.raises(UnsupportedConversionError) as info:
        modelkit.convert(models["lookup"], "onnx,saved_model", out_dir=tmp_path)
    exc = info.value
    assert [r.format for r in exc.results] == ["saved_model"]
    assert Path(exc.results[0].path).is_dir() and exc.results[0].parity["ok"]
    assert list(exc.failures) == ["onnx"] and "IntegerLookup" in exc.failures["onnx"]
    assert str(exc).startswith("1 of 2 formats failed (written: saved_model) | onnx: ")
    assert not (tmp_path / "lookup.onnx").exists()


def test_one_format_keeps_its_own_error_unchanged(models, tmp_path):
    with pytest.raises(UnsupportedConversionError) as info:
        modelkit.convert(models["lookup"], "onnx", out_dir=tmp_path)
    assert not hasattr(info.value, "results") and "formats failed" not in str(info.value)
    assert "IntegerLookup" in str(info.value)


@pytest.mark.slow
def test_cli_shows_what_was_written_then_one_error_line(models, tmp_path):
    """keras -> onnx is written and verified; onnx -> tvm fails in its child (an LSTM of open length: TVM's
    importer has none and modelkit.targets.tvm.lower_rnn unrolls fixed lengths only)."""
    r = CliRunner().invoke(main, ["convert", str(models["lstm"]), "--to", "onnx,tvm", "--out", str(tmp_path)])
    assert r.exit_code == 2, r.output
    table = r.stdout
    assert "onnx" in table and str(tmp_path / "lstm.onnx") in table and "ok" in table
    assert "tvm" in table and "FAILED (below)" in table
    error_lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(error_lines) == 1
    assert error_lines[0].startswith("error: 1 of 2 formats failed (written: onnx) | tvm: ")
    assert "LSTM" in error_lines[0]
    assert "onnx -> tvm: FAILED (UnsupportedConversionError); going on with the other formats" in r.stderr
    assert "fixed batch" not in r.stderr  # a missing operator is missing at any batch: no batch-1 attempt
    assert (tmp_path / "lstm.onnx").is_file() and not (tmp_path / "lstm.tvm.so").exists()


def test_cli_json_lists_the_failed_format_with_its_error(models, tmp_path):
    r = CliRunner().invoke(main, ["convert", str(models["lookup"]), "--to", "saved_model,onnx", "--out",
                                  str(tmp_path), "--json"])
    assert r.exit_code == 2, r.output
    rows = json.loads(r.stdout)
    assert [row["format"] for row in rows] == ["saved_model", "onnx"]
    assert rows[0]["parity"]["ok"] and "IntegerLookup" in rows[1]["error"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["heads", "masked_heads"])
def test_attention_compiles_for_tvm_with_a_dynamic_batch(models, tmp_path, kind):
    """Attention heads' Reshape targets are computed from the batch, which TVM's importer does not take: these
    compiled at batch 1 only (a masked one's mask slice also lost its shape). Now any batch, with parity."""
    pytest.importorskip("tvm")
    results = modelkit.convert(models[kind], "tvm", out_dir=tmp_path)
    lib = next(Path(r.path) for r in results if r.format == "tvm")
    extra = json.loads(manifest_path(lib).read_text())["extra"]
    assert extra["dynamic_batch"] is True and extra["batch_note"] is None
    source = modelkit.load(models[kind])
    spec = source.signature.inputs[0]
    rng = np.random.default_rng(3)
    x = rng.random((9, 12, 8)).astype("float32") if kind == "heads" else rng.integers(0, 30, (9, 10)).astype("int32")
    if kind == "masked_heads":
        x[1::2, 6:] = 0  # padding
    want = source.predict({spec.name: x})["logits"]
    got = modelkit.load(lib).predict({spec.name: x})["logits"]
    assert np.abs(got - want).max() < 1e-4 and np.std(want) > 1e-3


@pytest.mark.slow
def test_3d_pooling_converts_to_tflite_as_2d_pooling_with_parity(models, tmp_path):
    """MaxPooling3D / AveragePooling3D have no TFLite builtin; they are lowered to 2-D pooling while tracing."""
    (r,) = modelkit.convert(models["pool3d"], "tflite", out_dir=tmp_path)
    assert r.parity["ok"] and r.max_abs < 1e-4
    assert {c["batch"] for c in r.parity["cases"]} == {1, 7}
    x = np.random.default_rng(5).random((3, 5, 9, 9, 2)).astype("float32")
    want = modelkit.load(models["pool3d"]).predict({"clip": x})["out"]
    assert np.abs(modelkit.load(r.path).predict({"clip": x})["out"] - want).max() < 1e-4


def test_the_written_list_tells_a_quantized_artifact_from_its_exact_source():
    from modelkit.converters.result import ConversionResult, partial_failure
    from modelkit.errors import AccuracyError
    from modelkit.formats import Format

    written = [ConversionResult("onnx", "m.int8.onnx", 0.3, 1, None, quantization="int8"),
               ConversionResult("onnx", "m.onnx", 0.1, 1, None, quantization="none")]
    exc = partial_failure(written, 3, {Format.OPENVINO: AccuracyError("m.int8_openvino loses too much accuracy")})
    assert str(exc).startswith("1 of 3 formats failed (written: onnx (int8), onnx) | openvino: m.int8_openvino")


def test_every_existing_artifact_is_named_at_once(tmp_path):
    from modelkit.errors import ArtifactExistsError
    from tests.helpers import make_tiny_onnx

    src = make_tiny_onnx(tmp_path / "tiny.onnx")
    (tmp_path / "tiny_openvino").mkdir()
    (tmp_path / "tiny.tvm.so").write_bytes(b"earlier")
    with pytest.raises(ArtifactExistsError, match=r"^2 artifacts exist: .*tiny_openvino, .*tiny.tvm.so; pass --force"):
        modelkit.convert(src, "openvino,tvm", verbose=False)
    (tmp_path / "tiny.tvm.so").unlink()
    with pytest.raises(ArtifactExistsError, match=r"tiny_openvino exists; pass --force \(force=True\) to overwrite"):
        modelkit.convert(src, "openvino,tvm", verbose=False)
    assert (tmp_path / "tiny_openvino").is_dir() and not (tmp_path / "tiny.tvm.so").exists()
