"""A newcomer's whole journey, scripted (issue 18's acceptance test): their own model built by a file that
imports a custom layer from a sibling module, trained on their own colour images, in their own folder, with
the console script and a shell that sets none of modelkit's variables: train -> convert (all formats) ->
inspect -> run -> verify on their data -> int8 with their data -> bench -> serve -> package. Every step exits
0 with the result on stdout; the first mistake (no --import) is one line naming the flag; no engine's log
line (TensorFlow's oneDNN / absl notices, Python warnings) reaches the terminal."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import ServerProcess, http, modelkit_script
from tests.helpers.user_code import SCALED_SWISH

BUILD = '''import keras
from mylayers import ScaledSwish


def build(num_classes=3):
    inp = keras.Input((12, 12, 3), name="img")
    h = keras.layers.Conv2D(6, 3, activation="relu")(inp)
    h = ScaledSwish(name="swish")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(inp, keras.layers.Dense(num_classes, activation="softmax", name="probs")(h))
'''
NOISE = ("oneDNN", "absl", "I0000", "cpu_feature_guard", "Traceback", "Warning:", "WARNING:", "XNNPACK",
         "fully_quantize")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("newcomer_journey")
    (d / "mylayers.py").write_text(SCALED_SWISH)
    (d / "mybuild.py").write_text(BUILD)
    rng = np.random.default_rng(0)
    x = rng.random((240, 12, 12, 3), dtype=np.float32)  # colour images: channel means decide the class
    np.savez(d / "train.npz", x=x, y=x.mean(axis=(1, 2)).argmax(axis=1).astype(np.int64))
    np.save(d / "x.npy", x[:2])
    return d


def _shell() -> dict[str, str]:
    """A user's shell: none of the variables the Makefile and the test suite set."""
    drop = ("TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS", "PYTHONWARNINGS", "MODELKIT_IMPORTS", "MODELKIT_QUIET",
            "GRPC_VERBOSITY")
    return {k: v for k, v in os.environ.items() if k not in drop}


def _ok(folder: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    done = modelkit_script(*args, cwd=folder, env=_shell(), timeout=timeout)
    assert done.returncode == 0, f"modelkit {' '.join(args)}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    noise = [line for line in done.stderr.splitlines() if any(n in line for n in NOISE)]
    assert not noise, f"modelkit {' '.join(args)} printed engine noise: {noise[:5]}"
    return done


@pytest.mark.slow
def test_a_newcomer_goes_from_their_own_model_to_a_served_package(folder: Path, tmp_path: Path) -> None:
    done = _ok(folder, "train", "--model", "mybuild.py:build", "--data", "train.npz", "--epochs", "2",
               "--out", "my.keras")
    assert "--import mybuild.py" in done.stderr  # train says how to load the model later

    first = modelkit_script("convert", "my.keras", "--to", "onnx", cwd=folder, env=_shell())  # forgot --import
    assert first.returncode == 2 and len(first.stderr.strip().splitlines()) == 1, first.stderr
    assert "--import MODULE_OR_FILE" in first.stderr and "trained with --import mybuild.py" in first.stderr

    done = _ok(folder, "convert", "my.keras", "--to", "all", "--import", "mybuild.py", "--out", "out")
    made = {"my.onnx", "my.tflite", "my.pt2", "my.torchscript.pt", "my_saved_model",
            "my.pte", "my.tvm.so", "my_openvino"}
    assert made <= {p.name for p in (folder / "out").iterdir()}
    assert done.stdout.count(" ok ") >= len(made), done.stdout

    done = _ok(folder, "inspect", "out/my.tflite")
    assert "img: float32(?, 12, 12, 3)" in done.stdout and "probs: float32(?, 3)" in done.stdout

    _ok(folder, "run", "out/my.onnx", "--input", "x.npy", "--output", "y.npz")
    probs = np.load(folder / "y.npz")["probs"]
    assert probs.shape == (2, 3) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)

    done = _ok(folder, "verify", "my.keras", "out/my.tflite", "--data", "train.npz", "--import", "mybuild.py")
    assert "inputs: user samples (train.npz, 240 rows)" in done.stdout and "parity OK" in done.stdout

    # int8 calibrated and judged on the user's own colour data set (named by the manifest train wrote)
    # (60 held-out samples: one flipped prediction is a 0.017 drop, so the limit leaves room for another CPU's
    # int8 kernels; the journey is under test, not this toy model's int8 accuracy)
    _ok(folder, "convert", "my.keras", "--to", "tflite", "--quantize", "int8", "--import", "mybuild.py",
        "--max-accuracy-drop", "0.05", "--out", "q")
    done = _ok(folder, "inspect", "q/my.int8.tflite")
    assert "quantization: int8" in done.stdout and "accuracy OK" in done.stdout

    done = _ok(folder, "bench", "out/my.onnx", "out/my.tflite", "--batch", "1", "--iterations", "5",
               "--import", "mybuild.py", "--json")
    rows = json.loads(done.stdout)["rows"]
    assert {r["format"] for r in rows} == {"keras", "onnx", "tflite"} and all(r["error"] is None for r in rows)
    assert all(r["speedup_vs_predict"] > 1 for r in rows if r["format"] != "keras")

    server = ServerProcess(["out/my.onnx"], tmp_path / "serve.log", folder)
    try:
        server.wait_ready()
        x = np.load(folder / "x.npy")
        body = {"inputs": [{"name": "img", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
        status, _, data = http(server.port, "POST", "/v2/models/my/infer", json.dumps(body).encode(),
                               {"Content-Type": "application/json"})
        assert status == 200, data
        (out,) = json.loads(data)["outputs"]
        assert out["shape"] == [2, 3] and np.allclose(np.reshape(out["data"], (2, 3)), probs, atol=1e-5)
    finally:
        assert server.stop() == 0

    done = _ok(folder, "package", "out/my_saved_model", "--for", "tf-serving", "--out", "tfs")
    assert "my/1/variables/ (2 files" in done.stdout and "my/1/saved_model.pb" in done.stdout
    done = _ok(folder, "package", "out/my.onnx", "--to", "triton", "-o", "triton")  # --to as on convert (nc21)
    assert (folder / "triton" / "my" / "config.pbtxt").is_file()
    assert sys.executable  # the journey ran under this interpreter, as `modelkit` would
