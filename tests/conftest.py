"""Shared fixtures. Models are trained once per session, in child processes, so the pytest process
keeps one Keras backend (tensorflow) and the torch-trained model really comes from torch."""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from tests.helpers import make_tiny_onnx  # noqa: E402
from tests.helpers.models import trained_once  # noqa: E402

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_collection_modifyitems(config, items):
    if not IN_CI:
        return
    skip = pytest.mark.skip(reason="slow test: skipped when CI=true (run locally with `make test`)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _quiet_does_not_leak():
    """`modelkit -q` sets MODELKIT_QUIET=1 for its process and the children it starts (a real CLI process then
    ends); a test that invokes it in-process (CliRunner) must not leave it set for the next tests, whose
    subprocesses would print no progress lines."""
    from modelkit._text import QUIET_ENV

    before = os.environ.get(QUIET_ENV)
    yield
    if before is None:
        os.environ.pop(QUIET_ENV, None)
    else:
        os.environ[QUIET_ENV] = before


@pytest.fixture(autouse=True, scope="module")
def _signal_stack_kept(request):
    """A module that leaves the main thread's alternate signal stack freed (OpenVINO Cores dropped out of order did)
    fails here, named, instead of the suite dying of SIGSEGV at the next test that raises a signal."""
    from tests.helpers.signals import freed_signal_stack

    yield
    freed = freed_signal_stack()
    assert freed is None, f"{request.module.__name__}: {freed}; the next signal handler would crash the process"


@pytest.fixture
def python_sigint():
    """Python's own SIGINT handler for the test, as a user's process has it (a pytest-xdist worker ignores SIGINT,
    and modelkit.core.interrupt leaves any handler but Python's alone)."""
    import signal

    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def cnn_tf(models_dir, tmp_path_factory, worker_id) -> Path:
    """The CNN trained on digits under the TensorFlow backend (once per run; each worker has its copy)."""
    return trained_once(tmp_path_factory, worker_id, models_dir / "cnn_tf.keras", "cnn", "tensorflow")


@pytest.fixture(scope="session")
def cnn_torch(models_dir, tmp_path_factory, worker_id) -> Path:
    """The CNN trained on digits under the torch backend (once per run; each worker has its copy)."""
    return trained_once(tmp_path_factory, worker_id, models_dir / "cnn_torch.keras", "cnn", "torch")


@pytest.fixture(scope="session")
def multi_io_jax(models_dir, tmp_path_factory, worker_id) -> Path:
    """The two-input, two-output model trained under the JAX backend (once per run; each worker has its copy)."""
    return trained_once(tmp_path_factory, worker_id, models_dir / "multi_io_jax.keras", "multi_io", "jax", epochs=2)


@pytest.fixture(scope="session")
def converted(models_dir, cnn_tf, cnn_torch) -> dict[str, dict[str, Path]]:
    """Both trained CNNs converted to onnx and saved_model (verified on the way)."""
    import modelkit

    out = {}
    for name, src in (("tensorflow", cnn_tf), ("torch", cnn_torch)):
        results = modelkit.convert(src, "onnx,saved_model", out_dir=models_dir / f"conv_{name}", force=True)
        out[name] = {r.format: Path(r.path) for r in results}
    return out


@pytest.fixture
def tiny_onnx(tmp_path) -> Path:
    return make_tiny_onnx(tmp_path / "tiny.onnx")
