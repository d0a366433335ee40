"""Fixtures for the security tests: tiny artifacts of every format, and a session's LoadWorker
(tests/helpers/load.py: a child that loads files under memory and time limits)."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import LoadWorker
from tests.serving.conftest import serve  # noqa: F401 - real server processes on loopback


@pytest.fixture(scope="session")
def load_worker():
    w = LoadWorker()
    yield w
    w.close()


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory) -> dict[str, Path]:
    from ._build import build_all

    return build_all(tmp_path_factory.mktemp("security_artifacts"))


@pytest.fixture(scope="session")
def openvino_artifact(tmp_path_factory, artifacts) -> Path:
    pytest.importorskip("openvino")
    from ._build import build_openvino

    return build_openvino(tmp_path_factory.mktemp("security_openvino"), artifacts["onnx"])


@pytest.fixture(scope="session")
def executorch_artifact(tmp_path_factory, artifacts) -> Path:
    pytest.importorskip("executorch")
    from ._build import build_executorch

    return build_executorch(tmp_path_factory.mktemp("security_executorch"), artifacts["keras"])


@pytest.fixture(scope="session")
def tvm_artifact(tmp_path_factory, artifacts) -> Path:
    pytest.importorskip("tvm")
    from ._build import build_tvm

    return build_tvm(tmp_path_factory.mktemp("security_tvm"), artifacts["onnx"])
