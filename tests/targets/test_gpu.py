"""GPU paths: run for real on a CUDA machine; skipped elsewhere with the reason printed (pytest -ra)."""
import shutil

import numpy as np
import pytest

import modelkit


def _tvm_cuda_missing() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return "no NVIDIA GPU on this machine (nvidia-smi not found)"
    import tvm

    if not tvm.cuda(0).exist:
        return "a GPU is present but this TVM build has no CUDA runtime (PyPI's apache-tvm); build TVM with CUDA"
    return None


def _ort_cuda_missing() -> str | None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return "onnxruntime has no CUDAExecutionProvider here (install onnxruntime-gpu on a CUDA machine)"
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
