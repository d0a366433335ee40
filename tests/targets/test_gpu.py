"""GPU paths: run for real on a CUDA machine; skipped elsewhere with the reason printed (pytest -ra)."""
import shutil

import numpy as np
import pytest

import modelkit
from modelkit.errors import LoadError
from modelkit.runtime import tvm_host as gpu


def _tvm_cuda_missing() -> str | None:
    why = gpu.tvm_cuda_missing()
    if why is None:
        import tvm

        if not tvm.cuda(0).exist:
            return "TVM's CUDA runtime loads, but TVM sees no CUDA device"
    return why


def test_the_pypi_tvm_wheel_carries_a_cuda_runtime():
    """The server-gpu path needs no custom TVM build: the wheel ships libtvm_runtime_cuda.so."""
    pytest.importorskip("tvm")
    sidecar = gpu.tvm_cuda_sidecar()
    assert sidecar is not None and sidecar.name == "libtvm_runtime_cuda.so"
    assert gpu.needed_cudart(sidecar) == "libcudart.so.13"


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="a GPU machine: the reason would be absent")
def test_without_a_driver_the_reason_names_libcuda():
    pytest.importorskip("tvm")
    assert gpu.tvm_cuda_missing() == "no NVIDIA driver on this machine (libcuda.so.1 not found)"
    assert "CUDA execution provider" in _ort_cuda_missing()


def test_loading_a_server_gpu_library_without_a_gpu_says_what_is_missing(tiny_onnx, tmp_path):
    pytest.importorskip("tvm")
    if shutil.which("nvcc") is None:
        pytest.skip("compiling for server-gpu needs nvcc (the CUDA toolkit)")
    if _tvm_cuda_missing() is None:
        pytest.skip("this machine can run it: see test_server_gpu_library_runs_on_the_gpu")
    lib = modelkit.compile(tiny_onnx, "server-gpu", out=tmp_path / "tiny.server-gpu.tvm.so")
    m = modelkit.load(lib.path, device="cuda")
    with pytest.raises(LoadError, match=r"device 'cuda' is not available here \((no NVIDIA driver|TVM)"):
        m.predict(np.zeros((1, 4), np.float32))


def _ort_cuda_missing() -> str | None:
    """The reason modelkit's onnxruntime engine gives for refusing device 'cuda' here, or None."""
    from modelkit.runtime.onnxruntime import providers_for

    try:
        providers_for("cuda", 0)
    except LoadError as exc:
        return str(exc)
    return None


def test_server_gpu_library_runs_on_the_gpu(tiny_onnx, tmp_path):
    why = _tvm_cuda_missing()
    if why:
        pytest.skip(why)
    lib = modelkit.compile(tiny_onnx, "server-gpu", out=tmp_path / "tiny.server-gpu.tvm.so")
    x = np.random.default_rng(0).random((1, 4)).astype(np.float32)
    got = modelkit.load(getattr(lib, "path", lib), device="cuda").predict(x)["probs"]
    np.testing.assert_allclose(got, modelkit.load(tiny_onnx).predict(x)["probs"], atol=1e-4)


def test_onnxruntime_cuda_provider_matches_cpu(tiny_onnx):
    why = _ort_cuda_missing()
    if why:
        pytest.skip(why)
    x = np.random.default_rng(1).random((5, 4)).astype(np.float32)
    gpu = modelkit.load(tiny_onnx, device="cuda")
    assert gpu.session.get_providers()[0] == "CUDAExecutionProvider"
    np.testing.assert_allclose(gpu.predict(x)["probs"], modelkit.load(tiny_onnx).predict(x)["probs"], atol=1e-5)
