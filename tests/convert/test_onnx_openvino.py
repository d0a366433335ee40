"""Edge onnx -> openvino: OpenVINO's ONNX frontend, saved as an IR folder (model.xml + model.bin, float32
weights kept); `modelkit convert CNN.keras --to openvino` goes keras -> onnx -> openvino with parity on each
hop; inspect, run and bench take the artifact."""
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import modelkit
from modelkit.cli import main
from modelkit.converters.registry import edges, plan
from modelkit.errors import ArtifactExistsError
from modelkit.formats import Format, detect, manifest_path

pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install 'modelkit[openvino]')")


def test_edge_is_registered_without_backend_and_planned_from_keras():
    e = edges()[(Format.ONNX, Format.OPENVINO)]
    assert e.backend is None and e.tolerance.atol == 5e-4 and e.route == "frontend"
    assert [(s.source, s.target) for s in plan(Format.KERAS, Format.OPENVINO)] == [
        (Format.KERAS, Format.ONNX), (Format.ONNX, Format.OPENVINO)]
    assert Format.parse("OpenVINO") == Format.OPENVINO == Format.parse("ov")


def test_keras_cnn_to_openvino_parity_through_the_cli(cnn_tf, tmp_path):
    r = CliRunner().invoke(main, ["convert", str(cnn_tf), "--to", "openvino", "--out", str(tmp_path), "--json"])
    assert r.exit_code == 0, r.output
    art = tmp_path / "cnn_tf_openvino"
    assert sorted(p.name for p in art.iterdir()) == ["model.bin", "model.xml"]
    assert detect(art) == Format.OPENVINO and detect(art / "model.xml") == Format.OPENVINO
    assert (tmp_path / "cnn_tf.onnx").is_file()  # the hop on the way, written and verified too
    m = json.loads(manifest_path(art).read_text())
    assert m["format"] == "openvino" and m["parity"]["ok"] and m["parity"]["outputs"][0]["max_abs"] < 1e-4
    assert [(e["source"], e["target"]) for e in m["chain"]] == [("keras", "onnx"), ("onnx", "openvino")]
    assert m["chain"][-1]["versions"]["openvino"].startswith("2026.")
    assert m["size_bytes"] == (art / "model.xml").stat().st_size + (art / "model.bin").stat().st_size
    # float32 weights as saved (save_model's default would have halved them to f16 silently)
    xml = (art / "model.xml").read_text()
    assert 'element_type="f16"' not in xml and 'element_type="f32"' in xml
    assert not list(tmp_path.glob(".*partial"))

    # real digits: the IR agrees with the ONNX it came from and with the labels
    from modelkit.core.data import test_split

    inputs, labels = test_split("digits", "cnn", 0)
    x = {"image": inputs["image"][:64]}
    got = modelkit.load(art).predict(x)["probs"]
    want = modelkit.load(tmp_path / "cnn_tf.onnx").predict(x)["probs"]
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert (got.argmax(-1) == labels[:64]).mean() > 0.5

    r = CliRunner().invoke(main, ["inspect", str(art)])
    assert r.exit_code == 0, r.output
    assert "openvino" in r.output and "image: float32(?, 8, 8, 1)" in r.output and "onnx -> openvino" in r.output

    np.save(tmp_path / "x.npy", inputs["image"][:3])
    r = CliRunner().invoke(main, ["run", str(art), "--input", str(tmp_path / "x.npy"), "--output",
                                  str(tmp_path / "y.npz")])
    assert r.exit_code == 0, r.output
    assert np.load(tmp_path / "y.npz")["probs"].shape == (3, 10)

    r = CliRunner().invoke(main, ["bench", str(art), "--batch", "1,7", "--iterations", "5", "--warmup", "1",
                                  "--no-baseline", "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)["rows"]
    assert {(row["format"], row["engine"]) for row in rows} == {("openvino", "openvino")}
    assert sorted(row["batch"] for row in rows) == [1, 7]

    with pytest.raises(ArtifactExistsError):  # an existing IR is never replaced without force
        modelkit.convert(tmp_path / "cnn_tf.onnx", "openvino", out_dir=tmp_path)
    (again,) = modelkit.convert(tmp_path / "cnn_tf.onnx", "openvino", out_dir=tmp_path, force=True)
    assert again.parity["ok"] and sorted(p.name for p in art.iterdir()) == ["model.bin", "model.xml"]


def test_tiny_onnx_matches_onnxruntime_at_f32_with_a_dynamic_batch(tiny_onnx):
    (r,) = modelkit.convert(tiny_onnx, "openvino")
    assert Path(r.path).name == "tiny_openvino" and r.parity["ok"]
    assert [c["batch"] for c in r.parity["cases"]] == [1, 7]
    ov, ort = modelkit.load(r.path), modelkit.load(tiny_onnx)
    assert ov.engine == "openvino" and ov.signature.inputs[0].shape == (None, 4)
    assert ov.precision == "f32" and ov.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name() == "f32"
    rng = np.random.default_rng(0)
    for batch in (1, 7):
        x = rng.standard_normal((batch, 4)).astype(np.float32) * 10
        got, want = ov.predict(x)["probs"], ort.predict(x)["probs"]
        assert got.shape == (batch, 3)
        assert np.abs(got - want).max() <= 1e-5


@pytest.mark.slow
def test_bf16_is_an_accuracy_gated_mode_of_the_openvino_hop_only(cnn_tf, tmp_path):
    from modelkit.errors import UnsupportedConversionError
    from modelkit.runtime.openvino import cpu_capabilities

    if "BF16" not in cpu_capabilities():
        pytest.skip("this CPU has no bf16 arithmetic (AVX512_BF16 / AMX): OpenVINO runs f32 and bf16 is refused "
                    "(test_bf16_is_refused_where_the_cpu_has_no_bf16)")
    results = modelkit.convert(cnn_tf, "openvino", out_dir=tmp_path, quantize="bf16")
    by_format = {r.format: r for r in results}
    onnx, ir = by_format["onnx"], by_format["openvino"]
    assert Path(onnx.path).name == "cnn_tf.onnx" and onnx.quantization == "none" and onnx.max_abs < 1e-4  # exact
    assert Path(ir.path).name == "cnn_tf.bf16_openvino" and ir.quantization == "bf16"
    assert ir.accuracy["ok"] and ir.accuracy["drop"] <= 0.01 and ir.accuracy["samples"] == 360
    m = json.loads(manifest_path(ir.path).read_text())
    assert m["quantization"] == "bf16" and m["extra"]["accuracy"]["ok"]
    assert modelkit.load(ir.path).precision == "bf16"  # the IR records it (rt_info); the engine follows
    assert modelkit.load(ir.path, precision="f32").precision == "f32"  # the caller's choice wins
    assert modelkit.load(tmp_path / "cnn_tf.onnx").signature == modelkit.load(ir.path).signature
    with pytest.raises(UnsupportedConversionError, match="valid modes for onnx: none, dynamic-int8, int8"):
        modelkit.convert(cnn_tf, "onnx", out_dir=tmp_path / "o", quantize="bf16")
    with pytest.raises(UnsupportedConversionError, match="valid modes for openvino: none, bf16"):
        modelkit.convert(tmp_path / "cnn_tf.onnx", "openvino", out_dir=tmp_path / "i", quantize="fp16")


def test_int8_by_nncf_at_the_openvino_hop_through_the_cli(cnn_tf, tmp_path):
    pytest.importorskip("nncf", reason="NNCF is not installed (pip install 'modelkit[openvino]')")
    from modelkit.converters.planning import quantizing_edge
    from modelkit.converters.registry import plan

    # int8 to openvino quantizes the openvino hop (NNCF on the IR), after an exact ONNX; int8 to tvm still
    # quantizes the onnx hop (onnxruntime QDQ), as before
    assert quantizing_edge(plan(Format.KERAS, Format.OPENVINO), "int8").target == Format.OPENVINO
    assert quantizing_edge(plan(Format.KERAS, Format.TVM), "int8").target == Format.ONNX
    # 0.03: the gate's mechanics are under test, not NNCF's accuracy on one CPU's int8 kernels (measured 0.0056
    # here, 2 of 360 samples; the default 0.01 would leave one sample of margin on another CPU)
    r = CliRunner().invoke(main, ["convert", str(cnn_tf), "--to", "openvino", "--quantize", "int8",
                                  "--max-accuracy-drop", "0.03", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert "[2/2] onnx -> openvino: accuracy OK:" in r.output and "NNCF" not in r.output
    assert "INFO:nncf" not in r.output and "Statistics collection" not in r.output  # NNCF's log and progress bars
    ir = tmp_path / "cnn_tf.int8_openvino"
    m = json.loads(manifest_path(ir).read_text())
    assert m["quantization"] == "int8" and m["extra"]["accuracy"]["ok"] and m["extra"]["accuracy"]["drop"] <= 0.03
    assert m["chain"][-1]["versions"]["nncf"] == "3.4.0" and m["chain"][0]["options"]["quantize"] == "none"
    onnx = json.loads(manifest_path(tmp_path / "cnn_tf.onnx").read_text())
    assert onnx["quantization"] == "none" and onnx["parity"]["ok"]  # the ONNX before it stays exact
    assert "FakeQuantize" in (ir / "model.xml").read_text()
    model = modelkit.load(ir)
    x = np.random.default_rng(0).random((3, *model.signature.inputs[0].shape[1:]), dtype=np.float32)
    out = model.predict({model.signature.input_names[0]: x})
    assert out[model.signature.output_names[0]].shape[0] == 3


@pytest.mark.slow
def test_the_onnx_on_the_way_is_reused_when_modelkit_made_it_from_this_source(cnn_tf, tmp_path):
    """`--to onnx` then `--to openvino`: the second reuses the verified ONNX (was: 'cnn.onnx exists; pass
    --force'); an ONNX changed since, or made from another source, is still refused, never overwritten."""
    (onnx_r,) = modelkit.convert(cnn_tf, "onnx", out_dir=tmp_path)
    onnx_path = Path(onnx_r.path)
    before = (onnx_path.read_bytes(), onnx_path.stat().st_mtime_ns)
    r = CliRunner().invoke(main, ["convert", str(cnn_tf), "--to", "openvino", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert "reusing cnn_tf.onnx: made from this cnn_tf.keras" in r.stderr
    rows = {line.split()[0]: line for line in r.stdout.splitlines() if line.strip()}
    assert "reused" in rows["onnx"] and "reused" not in rows["openvino"]
    assert (onnx_path.read_bytes(), onnx_path.stat().st_mtime_ns) == before  # not written again
    assert json.loads(manifest_path(tmp_path / "cnn_tf_openvino").read_text())["parity"]["ok"]

    # changed since: the manifest's sha256 no longer matches, so the file is the user's -> refused, kept
    import shutil

    shutil.rmtree(tmp_path / "cnn_tf_openvino")
    onnx_path.write_bytes(before[0] + b"\0")
    with pytest.raises(ArtifactExistsError, match="cnn_tf.onnx exists; pass --force"):
        modelkit.convert(cnn_tf, "openvino", out_dir=tmp_path)
    assert onnx_path.read_bytes() == before[0] + b"\0" and not (tmp_path / "cnn_tf_openvino").exists()


@pytest.mark.slow
def test_the_onnx_on_the_way_is_reused_under_the_route_that_made_it(cnn_tf, tmp_path):
    """`--route torch` kept every intermediate from being reused, even one that route made; now a file made by a
    route the conversion allows is reused, and one made by another route is refused as before."""
    modelkit.convert(cnn_tf, "onnx", out_dir=tmp_path, route="torch")
    results = modelkit.convert(cnn_tf, "openvino", out_dir=tmp_path, route="torch")
    assert [r.route for r in results][0] == {"reused": True} and results[-1].parity["ok"]
    exists = r"2 artifacts exist: \S+cnn_tf\.onnx, \S+cnn_tf_openvino; pass --force"
    with pytest.raises(ArtifactExistsError, match=exists):
        modelkit.convert(cnn_tf, "openvino", out_dir=tmp_path, route="tf2onnx")  # the torch-made ONNX: not reused


def test_bf16_is_refused_where_the_cpu_has_no_bf16(cnn_tf, tmp_path, monkeypatch):
    """On an AVX2 CPU OpenVINO ignored the bf16 hint and ran f32: the accuracy gate passed f32 as bf16 and the
    engine reported 'f32' for an IR converted 'bf16'. Refused before any work, saying why."""
    from modelkit.errors import UnsupportedConversionError
    from modelkit.runtime import openvino as ov_engine

    monkeypatch.setattr(ov_engine, "cpu_capabilities", lambda: ["FP32", "INT8", "BIN"])  # an AVX2 CPU's
    for src in (cnn_tf, tmp_path / "cnn.onnx"):
        if src.suffix == ".onnx":
            modelkit.convert(cnn_tf, "onnx", out_dir=tmp_path)
            (tmp_path / "cnn_tf.onnx").rename(src)
        with pytest.raises(UnsupportedConversionError) as info:
            modelkit.convert(src, "openvino", out_dir=tmp_path / "out", quantize="bf16")
        assert str(info.value) == (
            "quantization 'bf16' needs a CPU with bf16 arithmetic (AVX512_BF16 or AMX); OpenVINO on this one (FP32, "
            "INT8, BIN) would run the IR in f32, and the accuracy gate would measure f32, not bf16: convert on the "
            "kind of CPU that will run it, or use --quantize int8")
        assert not (tmp_path / "out").exists()  # nothing converted, not even the exact ONNX on the way
