"""Running out of memory is a ResourceError on every engine, saying how much memory was needed: predict on
an input just under MODELKIT_MAX_INPUT_BYTES in a process capped (RLIMIT_AS) below what the engine needs,
and load of a model larger than what is left. Each case runs in a child process, so an engine that
crashes instead of raising fails the test with its signal instead of killing pytest."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import make_tiny_onnx

ROOT = Path(__file__).resolve().parents[2]
MiB = 1 << 20
INPUT_BYTES = 64 * MiB  # (4194304, 4) float32; the outputs (4194304, 3) take 48 MiB
TIGHT = 16 * MiB  # less than the outputs: no engine can finish
ENGINES = ["onnx", "keras", "saved_model", "tflite", "torchscript", "pt2", "tvm", "openvino"]
ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "0", "PYTHONWARNINGS": "ignore",
       "KERAS_BACKEND": "tensorflow", "OMP_NUM_THREADS": "1", "TVM_NUM_THREADS": "1",
       "MODELKIT_MAX_INPUT_BYTES": str(INPUT_BYTES + 4096)}


def build_pt2_without_max_batch(path: Path) -> Path:
    """The security tests' .pt2 caps the batch at 2**20 rows; this one has no maximum, like modelkit's own."""
    import torch

    from tests.security._build import SIG, _torch_module

    batch = torch.export.Dim("batch", min=1)
    ep = torch.export.export(_torch_module(), (torch.zeros(2, 4),), dynamic_shapes=({0: batch},))
    torch.export.save(ep, str(path), extra_files={"modelkit_signature.json": json.dumps(SIG)})
    return path


def build_large_onnx(path: Path, floats: int) -> Path:
    """y = sum(x) * c with a constant c of `floats` float32 values: the file is as large as c."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["x", "axes"], ["s"], keepdims=0), helper.make_node("Mul", ["s", "c"], ["y"])],
        "large", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [floats])],
        [numpy_helper.from_array(np.ones(floats, np.float32), "c"),
         numpy_helper.from_array(np.array([0, 1], np.int64), "axes")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> dict[str, Path]:
    from tests.security._build import build_all

    folder = tmp_path_factory.mktemp("memory")
    out = build_all(folder)
    out["pt2"] = build_pt2_without_max_batch(folder / "wide.pt2")
    return out


@pytest.fixture(scope="module")
def tvm_library(tmp_path_factory, artifacts) -> Path:
    pytest.importorskip("tvm")
    from tests.security._build import build_tvm

    return build_tvm(tmp_path_factory.mktemp("memory_tvm"), artifacts["onnx"])


def run_child(*args: object) -> dict:
    """tests/runtime/_memory_child.py's answer; a child killed by a signal fails the test, naming it."""
    proc = subprocess.run([sys.executable, "-m", "tests.runtime._memory_child", *map(str, args)], cwd=ROOT,
                          env={**os.environ, **ENV, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                          timeout=300)
    if proc.returncode < 0:
        pytest.fail(f"the child crashed: {signal.Signals(-proc.returncode).name}; stderr: {proc.stderr[-1500:]}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def openvino_ir(tmp_path_factory, artifacts) -> Path:
    pytest.importorskip("openvino")
    from tests.security._build import build_openvino

    return build_openvino(tmp_path_factory.mktemp("memory_openvino"), artifacts["onnx"])


def artifact(engine: str, artifacts: dict[str, Path], request) -> Path:
    if engine in ("tvm", "openvino"):  # built from the onnx artifact
        return request.getfixturevalue({"tvm": "tvm_library", "openvino": "openvino_ir"}[engine])
    return artifacts[engine]


def assert_ran_out_while_running(result: dict) -> str:
    assert result["raised"] == "ResourceError", result
    message = result["message"]
    assert "ran out of memory running this model: the inputs take 64.0 MiB (67108864 bytes) and the outputs " \
           "need about 48.0 MiB (50331648 bytes), so it needs at least 112.0 MiB (117440512 bytes)" in message
    assert "(RLIMIT_AS)" in message and "use a smaller batch" in message
    return message


# keras / saved_model in CI: the TensorFlow headroom test below; these two and tvm are slow
@pytest.mark.parametrize("engine", [pytest.param(e, marks=pytest.mark.slow) if e in ("keras", "saved_model", "tvm")
                                    else e for e in ENGINES])
@pytest.mark.slow
def test_predict_out_of_memory_is_a_resource_error(engine, artifacts, request):
    path = artifact(engine, artifacts, request)
    message = assert_ran_out_while_running(run_child(path, INPUT_BYTES, TIGHT))
    assert message.startswith(f"{path.name}: ")


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["saved_model", "keras"])
def test_tensorflow_is_refused_before_it_can_abort_the_process(engine, artifacts):
    """Room for one copy of the input but not for TensorFlow's working memory: TensorFlow itself would die
    of an uncaught std::bad_alloc (SIGABRT) or a null buffer (SIGSEGV), so the engine checks first."""
    message = assert_ran_out_while_running(run_child(artifacts[engine], INPUT_BYTES, INPUT_BYTES + 32 * MiB))
    assert "was not called" in message and "aborts the process when an allocation fails" in message


def test_a_graph_failing_for_another_reason_stays_a_load_error(tmp_path):
    """A failure while running that is not about memory keeps its LoadError, with memory to spare."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    import modelkit
    from modelkit.errors import LoadError

    graph = helper.make_graph(  # (batch, 4) -> (-1, 3): loads, and fails at run time unless 3 divides 4 * batch
        [helper.make_node("Reshape", ["x", "shape"], ["y"])], "bad_reshape",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])],
        [numpy_helper.from_array(np.array([-1, 3], np.int64), "shape")])
    path = tmp_path / "bad_reshape.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    model = modelkit.load(path)
    assert model.predict(np.ones((3, 4), np.float32))["y"].shape == (4, 3)
    with pytest.raises(LoadError, match="onnxruntime failed running this model") as info:
        model.predict(np.ones((2, 4), np.float32))
    assert type(info.value) is LoadError


def test_load_out_of_memory_is_a_resource_error(tmp_path):
    large = build_large_onnx(tmp_path / "large.onnx", 16 * MiB)  # 64 MiB of weights
    warm_up = make_tiny_onnx(tmp_path / "tiny.onnx")
    result = run_child(large, 0, TIGHT, "--load-after", warm_up)
    assert result["raised"] == "ResourceError", result
    assert result["message"].startswith(f"{large}: onnxruntime ran out of memory loading this model "
                                        f"(64.0 MiB ({large.stat().st_size} bytes) on disk); this process may map ")
