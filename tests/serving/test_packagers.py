"""Packages for Triton, TF Serving, KServe and TorchServe: checked with the servers' own schemas and
tools (Triton's ModelConfig proto, saved_model_cli, TF Serving's PredictionLog, a real TorchServe)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from modelkit import manifest
from modelkit.errors import ArtifactExistsError
from modelkit.serving.errors import PackagingError
from modelkit.serving.packagers import package
from modelkit.spec import Signature, TensorSpec
from tests.helpers import call, free_port, http, make_tiny_onnx, tiny_expected, v2_request
from tests.helpers.proc import stop_group

BIN = Path(sys.executable).parent
X = np.array([[1, 2, 3, 4], [0.5, -1, 0, 2]], np.float32)


def triton_config(path: Path):
    from google.protobuf import text_format

    model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


@pytest.fixture(scope="module")
def tiny_saved_model(tmp_path_factory) -> Path:
    """A real SavedModel with a serving_default signature x:(None, 4) -> probs:(None, 3)."""
    import tensorflow as tf

    w = tf.constant(np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32))

    class Tiny(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
        def serve(self, x):
            return {"probs": tf.nn.softmax(x @ w)}

    path = tmp_path_factory.mktemp("sm") / "tiny_saved_model"
    m = Tiny()
    tf.saved_model.save(m, str(path), signatures={"serving_default": m.serve})
    return path


@pytest.fixture(scope="module")
def tiny_torchscript(tmp_path_factory) -> tuple[Path, object]:
    """A traced torch module with a hand-written manifest (the signature TorchScript does not carry)."""
    import torch

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Softmax(-1)).eval()
    path = tmp_path_factory.mktemp("ts") / "tiny.torchscript.pt"
    torch.jit.trace(module, torch.zeros(2, 4)).save(str(path))
    sig = Signature((TensorSpec("x", (None, 4)),), (TensorSpec("probs", (None, 3)),))
    manifest.write(path, manifest.Manifest(format="torchscript", signature=sig.to_dict()))
    with torch.no_grad():
        expected = module(torch.from_numpy(X)).numpy()
    return path, expected


def test_triton_package_config_and_serving_it(tmp_path, serve):
    onnx_path = make_tiny_onnx(tmp_path / "tiny.onnx")
    out = tmp_path / "triton"
    proc = subprocess.run([sys.executable, "-m", "modelkit", "package", str(onnx_path), "--for", "triton",
                           "--out", str(out), "--max-batch-size", "16", "--max-delay-ms", "5"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (out / "tiny" / "1" / "model.onnx").read_bytes() == onnx_path.read_bytes()
    cfg = triton_config(out / "tiny" / "config.pbtxt")
    assert cfg.name == "tiny" and cfg.platform == "onnxruntime_onnx" and cfg.max_batch_size == 16
    assert [(i.name, i.data_type, list(i.dims)) for i in cfg.input] == [("x", cfg.input[0].data_type, [4])]
    assert cfg.input[0].data_type == 11  # TYPE_FP32 in model_config.proto
    assert [(o.name, list(o.dims)) for o in cfg.output] == [("probs", [3])]
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 5000
    # the repository layout is servable as is by modelkit serve
    server = serve(out)
    status, resp = call(server.port, "POST", "/v2/models/tiny/infer", v2_request(X))
    assert status == 200
    np.testing.assert_allclose(np.reshape(resp["outputs"][0]["data"], (2, 3)), tiny_expected(X), atol=1e-6)
    # atomic outputs: an existing package is not overwritten without force
    with pytest.raises(ArtifactExistsError):
        package(onnx_path, "triton", out)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_triton_platforms_for_saved_model_and_torchscript(tmp_path, tiny_saved_model, tiny_torchscript):
    package(tiny_saved_model, "triton", tmp_path / "a", name="sm")
    cfg = triton_config(tmp_path / "a" / "sm" / "config.pbtxt")
    assert cfg.platform == "tensorflow_savedmodel" and cfg.max_batch_size == 32
    assert (tmp_path / "a" / "sm" / "1" / "model.savedmodel" / "saved_model.pb").is_file()
    package(tiny_torchscript[0], "triton", tmp_path / "b", name="ts", max_batch_size=0)
    cfg = triton_config(tmp_path / "b" / "ts" / "config.pbtxt")
    assert cfg.platform == "pytorch_libtorch" and cfg.max_batch_size == 0
    assert [i.name for i in cfg.input] == ["x__0"] and list(cfg.input[0].dims) == [-1, 4]
    assert [o.name for o in cfg.output] == ["probs__0"]
    assert not cfg.HasField("dynamic_batching")


def test_triton_carries_the_threads_a_model_was_measured_at(tmp_path, tiny_saved_model, tiny_torchscript):
    """threads= sets each backend's own intra-op key (what `modelkit optimize --package triton` measured the winner
    at); a SavedModel's is server-wide, so its config has none."""
    package(make_tiny_onnx(tmp_path / "t.onnx"), "triton", tmp_path / "o", name="o", threads=2)
    cfg = triton_config(tmp_path / "o" / "o" / "config.pbtxt")
    assert cfg.parameters["intra_op_thread_count"].string_value == "2"
    package(tiny_torchscript[0], "triton", tmp_path / "t", name="t", threads=3)
    assert triton_config(tmp_path / "t" / "t" / "config.pbtxt").parameters["INTRA_OP_THREAD_COUNT"].string_value == "3"
    package(tiny_saved_model, "triton", tmp_path / "s", name="s", threads=2)
    assert not triton_config(tmp_path / "s" / "s" / "config.pbtxt").parameters
    package(make_tiny_onnx(tmp_path / "u.onnx"), "triton", tmp_path / "u", name="u")
    assert not triton_config(tmp_path / "u" / "u" / "config.pbtxt").parameters  # none asked: the backend's default


def _prediction_log_class():
    """TF Serving's PredictionLog, declared from its .proto field numbers in a private descriptor pool."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    from tensorflow.core.framework import tensor_pb2

    pool = descriptor_pool.DescriptorPool()

    def add(fd) -> None:
        for dep in fd.dependencies:
            add(dep)
        try:
            pool.FindFileByName(fd.name)
        except KeyError:
            proto = descriptor_pb2.FileDescriptorProto()
            fd.CopyToProto(proto)
            pool.Add(proto)

    add(tensor_pb2.DESCRIPTOR)
    f = descriptor_pb2.FileDescriptorProto(name="tfs_test.proto", package="tensorflow.serving", syntax="proto3",
                                           dependency=[tensor_pb2.DESCRIPTOR.name])
    F = descriptor_pb2.FieldDescriptorProto
    opt, msg = F.LABEL_OPTIONAL, F.TYPE_MESSAGE

    def message(name, *fields):
        m = f.message_type.add(name=name)
        for fname, num, ftype, type_name, label in fields:
            m.field.add(name=fname, number=num, type=ftype, type_name=type_name, label=label)
        return m

    message("ModelSpec", ("name", 1, F.TYPE_STRING, None, opt), ("signature_name", 3, F.TYPE_STRING, None, opt))
    req = message("PredictRequest", ("model_spec", 1, msg, ".tensorflow.serving.ModelSpec", opt),
                  ("inputs", 2, msg, ".tensorflow.serving.PredictRequest.InputsEntry", F.LABEL_REPEATED))
    entry = req.nested_type.add(name="InputsEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=F.TYPE_STRING, label=opt)
    entry.field.add(name="value", number=2, type=msg, type_name=".tensorflow.TensorProto", label=opt)
    message("PredictLog", ("request", 1, msg, ".tensorflow.serving.PredictRequest", opt))
    message("PredictionLog", ("predict_log", 6, msg, ".tensorflow.serving.PredictLog", opt))
    pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.PredictionLog"))


@pytest.mark.slow
def test_tf_serving_package_layout_cli_and_warmup(tmp_path, tiny_saved_model):
    import tensorflow as tf

    out = package(tiny_saved_model, "tf-serving", tmp_path / "tfs", name="tiny", version=3)
    vdir = out / "tiny" / "3"
    assert (vdir / "saved_model.pb").is_file() and (vdir / "variables").is_dir()
    config = (out / "models.config").read_text()
    assert 'name: "tiny"' in config and 'base_path: "/models/tiny"' in config
    assert 'model_platform: "tensorflow"' in config
    proc = subprocess.run([str(BIN / "saved_model_cli"), "show", "--dir", str(vdir), "--all"],
                          capture_output=True, text=True, timeout=180,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr
    assert "signature_def['serving_default']" in proc.stdout
    assert "inputs['x'] tensor_info" in proc.stdout and "shape: (-1, 4)" in proc.stdout
    assert "outputs['probs'] tensor_info" in proc.stdout
    PredictionLog = _prediction_log_class()
    records = [r.numpy() for r in tf.data.TFRecordDataset(str(vdir / "assets.extra" / "tf_serving_warmup_requests"))]
    assert len(records) == 2
    for rec, rows in zip(records, (1, 8)):
        log = PredictionLog.FromString(rec)
        request = log.predict_log.request
        assert request.model_spec.name == "tiny" and request.model_spec.signature_name == "serving_default"
        arr = tf.make_ndarray(request.inputs["x"])
        assert arr.shape == (rows, 4) and arr.dtype == np.float32
        # the warm-up request runs on the packaged SavedModel itself
        fn = tf.saved_model.load(str(vdir)).signatures["serving_default"]
        assert fn(x=tf.constant(arr))["probs"].shape == (rows, 3)
    with pytest.raises(PackagingError, match="SavedModel"):
        package(make_tiny_onnx(tmp_path / "t.onnx"), "tf-serving", tmp_path / "bad")


def test_kserve_manifests_parse(tmp_path, tiny_saved_model, capsys):
    import yaml

    out = package(make_tiny_onnx(tmp_path / "tiny.onnx"), "kserve", tmp_path / "ks", storage_uri="s3://bucket/tiny")
    assert "PLACEHOLDER" not in (out / "inferenceservice.yaml").read_text() and "warning" not in capsys.readouterr().err
    doc = yaml.safe_load((out / "inferenceservice.yaml").read_text())
    assert doc["apiVersion"] == "serving.kserve.io/v1beta1" and doc["kind"] == "InferenceService"
    model = doc["spec"]["predictor"]["model"]
    assert model["modelFormat"]["name"] == "triton" and model["runtime"] == "kserve-tritonserver"
    assert model["protocolVersion"] == "v2" and model["storageUri"] == "s3://bucket/tiny"
    assert triton_config(out / "triton" / "tiny" / "config.pbtxt").platform == "onnxruntime_onnx"
    out = package(tiny_saved_model, "kserve", tmp_path / "ks2", name="My_Model")
    assert "warning: KServe: no --storage-uri" in capsys.readouterr().err  # no silent guess
    assert "# storageUri is a PLACEHOLDER (pvc://models/My_Model/tf-serving/My_Model)" in \
        (out / "inferenceservice.yaml").read_text()
    doc = yaml.safe_load((out / "inferenceservice.yaml").read_text())
    assert doc["metadata"]["name"] == "my-model"  # a valid Kubernetes name
    model = doc["spec"]["predictor"]["model"]
    assert model["modelFormat"]["name"] == "tensorflow" and model["runtime"] == "kserve-tensorflow-serving"
    assert (out / "tf-serving" / "My_Model" / "1" / "saved_model.pb").is_file()


def test_torchserve_package_runs_in_real_torchserve(tmp_path, tiny_torchscript):
    """Build the .mar, start TorchServe (Java) on loopback ports from the generated config, predict."""
    path, expected = tiny_torchscript
    ports = {k: free_port() for k in ("inference", "management", "metrics", "grpc_inference", "grpc_management")}
    out = package(path, "torchserve", tmp_path / "ts", name="tiny", ports=ports)
    with zipfile.ZipFile(out / "model-store" / "tiny.mar") as zf:
        names = set(zf.namelist())
        handler = zf.read("handler.py").decode()
        mar = json.loads(zf.read("MAR-INF/MANIFEST.json"))
    assert {"model.pt", "handler.py", "signature.json"} <= names
    assert mar["model"]["modelName"] == "tiny" and mar["model"]["serializedFile"] == "model.pt"
    assert '"name": "x"' in handler and "def bind(" in handler
    props = dict(line.split("=", 1) for line in (out / "config.properties").read_text().splitlines()
                 if line and not line.startswith("#"))
    assert props["inference_address"] == f"http://127.0.0.1:{ports['inference']}"
    assert props["disable_token_authorization"] == "false" and props["enable_model_api"] == "false"
    assert props["allowed_urls"] == "file://model-store/tiny\\.mar" and props["model_store"] == "model-store"
    assert props["grpc_inference_address"] == "127.0.0.1"
    assert str(tmp_path) not in (out / "config.properties").read_text()  # no absolute path: the folder can move

    moved = out.rename(tmp_path / "moved")  # started from the package folder, wherever it now is
    run = tmp_path / "run"
    (run / "tmp").mkdir(parents=True)
    env = {**os.environ, "TMPDIR": str(run / "tmp"), "TEMP": str(run / "tmp"), "LOG_LOCATION": str(run / "logs")}
    log = open(run / "torchserve.log", "wb")
    proc = subprocess.Popen([str(BIN / "torchserve"), "--start", "--foreground", "--ncs", "--ts-config",
                             "config.properties"],
                            cwd=moved, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        port, key, loaded = ports["inference"], None, False
        end = time.monotonic() + 300  # bounded; generous: Java and a Python worker start slowly on a busy machine
        while time.monotonic() < end and proc.poll() is None:
            if key is None and (moved / "key_file.json").is_file():
                try:
                    key = json.loads((moved / "key_file.json").read_text())
                except ValueError:
                    pass  # still being written
            loaded = "WORKER_MODEL_LOADED" in (run / "torchserve.log").read_text(errors="replace")
            if key and loaded:
                break
            time.sleep(0.25)
        assert key and loaded, (run / "torchserve.log").read_text(errors="replace")[-3000:]
        auth = {"Authorization": f"Bearer {key['inference']['key']}", "Content-Type": "application/json"}
        body = json.dumps({"inputs": {"x": X.tolist()}}).encode()
        status, _, data = http(port, "POST", "/predictions/tiny", body, auth)
        assert status == 200, data
        got = np.asarray(json.loads(data)["outputs"]["probs"], np.float32)
        assert np.abs(got - expected).max() <= 1e-6
        bad = json.dumps({"inputs": {"x": [[1, 2, 3]]}}).encode()
        status, _, data = http(port, "POST", "/predictions/tiny", bad, auth)
        assert status == 400 and b"dimension 1 must be 4" in data  # the generated handler validates
        status, _, _ = http(port, "POST", "/predictions/tiny", body, {"Content-Type": "application/json"})
        assert status in (400, 401)  # token authorization is on
        assert http(port, "GET", "/ping")[0] in (400, 401)  # /ping needs the token too: hence the probe
        probe = subprocess.run([sys.executable, "healthcheck.py"], cwd=moved, capture_output=True, text=True,
                               timeout=60)
        assert probe.returncode == 0, probe.stderr
        mgmt = {"Authorization": f"Bearer {key['management']['key']}"}
        status, _, _ = http(ports["management"], "POST", "/models?url=tiny.mar", b"", mgmt)
        assert status == 405  # the model-management API is off
    finally:  # stop TorchServe's own process group (launcher, java, workers): SIGTERM, SIGKILL after 30 s
        stop_group(proc, 30.0)
        log.close()


def test_packaging_refuses_wrong_formats(tmp_path):
    onnx_path = make_tiny_onnx(tmp_path / "tiny.onnx")
    with pytest.raises(PackagingError, match="TorchScript"):
        package(onnx_path, "torchserve", tmp_path / "a")
    with pytest.raises(PackagingError, match="unknown package target"):
        package(onnx_path, "seldon", tmp_path / "b")
    with pytest.raises(PackagingError, match="bad model name"):
        package(onnx_path, "triton", tmp_path / "c", name="../x")
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()


def test_the_tf_serving_listing_shows_the_variables_folder(tmp_path, tiny_saved_model):
    from click.testing import CliRunner

    from modelkit.cli import main

    result = CliRunner().invoke(main, ["package", str(tiny_saved_model), "--for", "tf-serving", "--out",
                                       str(tmp_path / "tfs"), "--name", "tiny"])
    assert result.exit_code == 0, result.output
    lines = [x.strip() for x in result.stdout.splitlines()[1:]]
    assert "tiny/1/saved_model.pb" in lines
    (variables,) = [x for x in lines if x.startswith("tiny/1/variables/")]
    assert variables.startswith("tiny/1/variables/ (2 files, ")  # the data and the index, on one line
