"""Shared fixtures. Models are trained once per session, in child processes, so the pytest process
keeps one Keras backend (tensorflow) and the torch-trained model really comes from torch."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from pathlib import Path  # noqa: E402
from typing import Iterator  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_collection_modifyitems(config, items):
    if not IN_CI:
        return
    skip = pytest.mark.skip(reason="slow test: skipped when CI=true (run locally with `make test`)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def sigint_default() -> None:
    """preexec_fn for a process that a test Ctrl-C's: a shell's background job (nohup, `cmd &`, some CI
    runners) starts with SIGINT ignored, and the process would inherit that; a terminal's does not."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


@contextlib.contextmanager
def cli_process(*args: str, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen]:
    """`python -m modelkit ARGS` in its own process group, output captured (text, stderr merged), as a
    terminal would start it; whatever the test does, the group is killed at the end. `env`: extra variables."""
    proc = subprocess.Popen([sys.executable, "-m", "modelkit", *args], start_new_session=True,
                            env={**os.environ, **env} if env else None,
                            preexec_fn=sigint_default, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()


def ctrl_c(proc: subprocess.Popen, timeout: float) -> str:
    """Send what a terminal's Ctrl-C sends (SIGINT to the foreground group); return the rest of the output."""
    os.killpg(proc.pid, signal.SIGINT)
    return proc.communicate(timeout=timeout)[0]


def train_in_child(model: str, backend: str, out: Path, epochs: int = 3) -> Path:
    from modelkit import _child

    _child.run("modelkit.core.train:train", {"model": model, "data": "digits", "epochs": epochs,
                                              "backend": backend, "out": str(out), "force": True,
                                              "verbose": False}, backend=backend, quiet=True)
    return out


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def cnn_tf(models_dir) -> Path:
    """The CNN trained on digits under the TensorFlow backend."""
    return train_in_child("cnn", "tensorflow", models_dir / "cnn_tf.keras")


@pytest.fixture(scope="session")
def cnn_torch(models_dir) -> Path:
    """The CNN trained on digits under the torch backend."""
    return train_in_child("cnn", "torch", models_dir / "cnn_torch.keras")


@pytest.fixture(scope="session")
def multi_io_jax(models_dir) -> Path:
    """The two-input, two-output model trained under the JAX backend."""
    return train_in_child("multi_io", "jax", models_dir / "multi_io_jax.keras", epochs=2)


@pytest.fixture(scope="session")
def converted(models_dir, cnn_tf, cnn_torch) -> dict[str, dict[str, Path]]:
    """Both trained CNNs converted to onnx and saved_model (verified on the way)."""
    import modelkit

    out = {}
    for name, src in (("tensorflow", cnn_tf), ("torch", cnn_torch)):
        results = modelkit.convert(src, "onnx,saved_model", out_dir=models_dir / f"conv_{name}", force=True)
        out[name] = {r.format: Path(r.path) for r in results}
    return out


def make_tiny_onnx(path: Path, weight_scale: float = 1.0) -> Path:
    """A real ONNX model without any framework: probs = softmax(x @ W + b), x: (batch, 4) float32."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = (rng.standard_normal((4, 3)) * weight_scale).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probs"], axis=-1)],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture
def tiny_onnx(tmp_path) -> Path:
    return make_tiny_onnx(tmp_path / "tiny.onnx")
