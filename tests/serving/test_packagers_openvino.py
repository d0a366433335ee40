"""OpenVINO IRs packaged for Triton (the openvino backend) and KServe (OpenVINO Model Server): configs checked
with Triton's ModelConfig proto and yaml, the packaged model.xml / model.bin loaded by OpenVINO itself with the
settings the package gives the server, and compared with the source; refusals are one line, exit 2."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import modelkit
from modelkit.cli import main
from modelkit.errors import ArtifactExistsError, LoadError, UnsafeModelError
from modelkit.serving.errors import PackagingError
from modelkit.serving.packagers import package
from tests.helpers import call, make_tiny_onnx, tiny_expected, v2_request
from tests.serving.test_packagers import X, triton_config

ov = pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install 'modelkit[openvino]')")


@pytest.fixture(scope="module")
def ir(tmp_path_factory) -> Path:
    """tiny_openvino/: softmax(x @ W + b), x (batch, 4) -> probs (batch, 3), made by modelkit convert (parity OK)."""
    folder = tmp_path_factory.mktemp("ov_pkg")
    (r,) = modelkit.convert(make_tiny_onnx(folder / "tiny.onnx"), "openvino", out_dir=folder)
    assert r.parity["ok"]
    return Path(r.path)


def _run_packaged(version_dir: Path, config: dict) -> tuple[object, np.ndarray]:
    """The packaged pair read and compiled by OpenVINO with `config`: (compiled model, probs for X). On the process's
    one Core, as the engine compiles: Cores dropped out of order leave a freed signal stack (runtime/openvino.py)."""
    from modelkit.runtime.openvino import core

    model = core().read_model(str(version_dir / "model.xml"), str(version_dir / "model.bin"))
    compiled = core().compile_model(model, "CPU", config)
    return compiled, compiled({"x": X})[compiled.output(0)]


def test_triton_package_of_an_ir_config_files_and_serving_it(ir, tmp_path, serve, capsys):
    out = tmp_path / "triton"
    r = CliRunner().invoke(main, ["package", str(ir), "--for", "triton", "--out", str(out), "--max-batch-size", "16",
                                  "--max-delay-ms", "5"])
    assert r.exit_code == 0, r.output
    assert "warning: Triton's openvino backend has no f32 setting" in r.stderr  # bf16 on AMX CPUs: said, not hidden
    vdir = out / "tiny" / "1"
    assert sorted(p.name for p in vdir.iterdir()) == ["model.bin", "model.xml"]
    assert sorted(p.name for p in (out / "tiny").iterdir()) == ["1", "config.pbtxt"]  # nothing else for Triton to scan
    for f in ("model.xml", "model.bin"):
        assert (vdir / f).read_bytes() == (ir / f).read_bytes()
    cfg = triton_config(out / "tiny" / "config.pbtxt")
    assert cfg.name == "tiny" and cfg.backend == "openvino" and cfg.platform == "" and cfg.max_batch_size == 16
    assert cfg.default_model_filename == "model.xml"
    assert [(i.name, i.data_type, list(i.dims)) for i in cfg.input] == [("x", 11, [4])]  # 11: TYPE_FP32
    assert [(o.name, o.data_type, list(o.dims)) for o in cfg.output] == [("probs", 11, [3])]
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 5000
    # the backend fixes the batch at max_batch_size: padding on, or every smaller batch is refused
    assert {k: v.string_value for k, v in cfg.parameters.items()} == {"ENABLE_BATCH_PADDING": "YES",
                                                                       "PERFORMANCE_HINT": "LATENCY"}
    # the packaged pair loads in OpenVINO and computes what the source computes (f32, as modelkit runs it)
    compiled, probs = _run_packaged(vdir, {"INFERENCE_PRECISION_HINT": "f32"})
    assert compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name() == "f32"
    source = modelkit.load(ir).predict(X)["probs"]
    assert np.abs(probs - source).max() <= 1e-6 and np.abs(probs - tiny_expected(X)).max() <= 1e-5
    # the repository is servable as is by modelkit serve (the version folder is the IR)
    server = serve(out)
    status, resp = call(server.port, "POST", "/v2/models/tiny/infer", v2_request(X))
    assert status == 200
    np.testing.assert_allclose(np.reshape(resp["outputs"][0]["data"], (2, 3)), source, atol=1e-6)
    # atomic outputs: an existing package is not replaced without force
    with pytest.raises(ArtifactExistsError):
        package(ir, "triton", out)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_triton_ir_without_batching_and_a_bf16_ir(ir, tmp_path):
    package(ir, "triton", tmp_path / "a", name="nb", max_batch_size=0)
    cfg = triton_config(tmp_path / "a" / "nb" / "config.pbtxt")
    assert cfg.max_batch_size == 0 and not cfg.HasField("dynamic_batching")
    assert list(cfg.input[0].dims) == [-1, 4] and list(cfg.output[0].dims) == [-1, 3]  # the IR's dynamic batch
    assert dict((k, v.string_value) for k, v in cfg.parameters.items()) == {"PERFORMANCE_HINT": "LATENCY"}
    # an IR that records bf16 (what --quantize bf16 writes) asks the backend for bf16, and nothing else changes
    bf16 = _bf16_copy(ir, tmp_path)
    package(bf16, "triton", tmp_path / "b", name="half")
    params = {k: v.string_value for k, v in triton_config(tmp_path / "b" / "half" / "config.pbtxt").parameters.items()}
    assert params["HINT_BF16"] == "YES" and params["ENABLE_BATCH_PADDING"] == "YES"
    # a bare IR made elsewhere (its .xml, the .bin of the same stem beside it) packages the same pair
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copyfile(ir / "model.xml", bare / "net.xml")
    shutil.copyfile(ir / "model.bin", bare / "net.bin")
    out = package(bare / "net.xml", "triton", tmp_path / "c")
    assert sorted(p.name for p in (out / "net" / "1").iterdir()) == ["model.bin", "model.xml"]
    assert (out / "net" / "1" / "model.bin").read_bytes() == (ir / "model.bin").read_bytes()
    assert triton_config(out / "net" / "config.pbtxt").backend == "openvino"


def _bf16_copy(ir: Path, tmp_path: Path, precision: str = "bf16") -> Path:
    """The IR saved again by OpenVINO with rt_info runtime_options / INFERENCE_PRECISION_HINT = precision."""
    model = ov.Core().read_model(str(ir / "model.xml"))
    model.set_rt_info(precision, ["runtime_options", "INFERENCE_PRECISION_HINT"])
    dest = tmp_path / f"tiny.{precision}_openvino"
    dest.mkdir()
    ov.save_model(model, str(dest / "model.xml"), compress_to_fp16=False)
    return dest


def test_kserve_package_of_an_ir_runs_on_openvino_model_server(ir, tmp_path, capsys):
    import yaml

    out = package(ir, "kserve", tmp_path / "ks", storage_uri="s3://bucket/tiny")
    text = (out / "inferenceservice.yaml").read_text()
    assert "PLACEHOLDER" not in text and "warning" not in capsys.readouterr().err
    doc = yaml.safe_load(text)
    model = doc["spec"]["predictor"]["model"]
    assert model["modelFormat"] == {"name": "openvino"} and model["runtime"] == "kserve-openvino"
    assert model["protocolVersion"] == "v2" and model["storageUri"] == "s3://bucket/tiny"
    # OVMS reads --model_path=/mnt/models holding the version folders: storageUri is openvino/NAME/
    vdir = out / "openvino" / "tiny" / "1"
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == [
        "inferenceservice.yaml", "openvino/tiny/1/model.bin", "openvino/tiny/1/model.xml"]
    (arg,) = model["args"]
    flag, _, value = arg.partition("=")
    config = json.loads(value)
    assert flag == "--plugin_config" and config == {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
    # the plugin config as OVMS passes it to compile_model: f32 pinned, outputs those of the source
    compiled, probs = _run_packaged(vdir, config)
    assert compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name() == "f32"
    assert np.abs(probs - modelkit.load(ir).predict(X)["probs"]).max() <= 1e-6
    for f in ("model.xml", "model.bin"):
        assert (vdir / f).read_bytes() == (ir / f).read_bytes()
    # no --storage-uri: a placeholder, said loudly; a bf16 IR asks OVMS for bf16
    out = package(_bf16_copy(ir, tmp_path), "kserve", tmp_path / "ks2", name="Tiny_Half")
    assert "warning: KServe: no --storage-uri" in capsys.readouterr().err
    text = (out / "inferenceservice.yaml").read_text()
    assert "# storageUri is a PLACEHOLDER (pvc://models/Tiny_Half/openvino/Tiny_Half)" in text
    args = yaml.safe_load(text)["spec"]["predictor"]["model"]["args"]
    assert json.loads(args[0].partition("=")[2])["INFERENCE_PRECISION_HINT"] == "bf16"
    # an IR recording f16 is pinned f16 there, as modelkit's engine runs it (was: pinned f32, read another way)
    f16 = _bf16_copy(ir, tmp_path, "f16")
    out = package(f16, "kserve", tmp_path / "ks5", storage_uri="s3://b/h")
    args = yaml.safe_load((out / "inferenceservice.yaml").read_text())["spec"]["predictor"]["model"]["args"]
    assert json.loads(args[0].partition("=")[2])["INFERENCE_PRECISION_HINT"] == "f16"
    assert modelkit.load(f16).config["INFERENCE_PRECISION_HINT"] == "f16"
    # threads (the winner's, from optimize --package kserve) go into OVMS' plugin config and Triton's backend
    out = package(ir, "kserve", tmp_path / "ks6", storage_uri="s3://b/t", threads=2)
    args = yaml.safe_load((out / "inferenceservice.yaml").read_text())["spec"]["predictor"]["model"]["args"]
    assert json.loads(args[0].partition("=")[2])["INFERENCE_NUM_THREADS"] == 2
    out = package(ir, "triton", tmp_path / "tr6", threads=2)
    assert triton_config(out / "tiny" / "config.pbtxt").parameters["INFERENCE_NUM_THREADS"].string_value == "2"
    # --runtime triton serves an IR through Triton's openvino backend instead
    out = package(ir, "kserve", tmp_path / "ks3", runtime="triton", storage_uri="s3://b/t")
    assert triton_config(out / "triton" / "tiny" / "config.pbtxt").backend == "openvino"
    with pytest.raises(PackagingError, match="packaged for OpenVINO IRs; .* is onnx"):
        package(make_tiny_onnx(tmp_path / "t.onnx"), "kserve", tmp_path / "ks4", runtime="openvino")
    assert not (tmp_path / "ks4").exists()


def test_hostile_or_damaged_irs_are_refused_before_anything_is_written(ir, tmp_path):
    dtd = tmp_path / "dtd_openvino"
    shutil.copytree(ir, dtd)
    text = (dtd / "model.xml").read_text()
    head, sep, rest = text.partition("?>")
    (dtd / "model.xml").write_text(head + sep + '\n<!DOCTYPE net [<!ENTITY a "aaaa">]>' + rest)
    for target in ("triton", "kserve"):
        with pytest.raises(UnsafeModelError, match="DTD"):
            package(dtd, target, tmp_path / f"out_{target}", storage_uri="s3://b/x")
    short = tmp_path / "short_openvino"
    shutil.copytree(ir, short)
    (short / "model.bin").write_bytes((ir / "model.bin").read_bytes()[:-8])  # a truncated weights file
    for target in ("triton", "kserve"):
        with pytest.raises(LoadError):
            package(short, target, tmp_path / f"short_{target}", storage_uri="s3://b/x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dtd_openvino", "short_openvino"]  # no output, no .partial


@pytest.mark.parametrize("target", ["torchserve", "tf-serving"])
def test_servers_without_openvino_refuse_an_ir_in_one_line(ir, tmp_path, target):
    r = CliRunner().invoke(main, ["package", str(ir), "--for", target, "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "is openvino" in r.stderr and "--for triton or --for kserve" in r.stderr and "Traceback" not in r.output
    assert not (tmp_path / "o").exists()
