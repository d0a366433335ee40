"""GPU paths: run for real on a CUDA machine; skipped elsewhere with the reason printed (pytest -ra).

A GPU server may carry TVM's runtime only (no compiler): there MODELKIT_GPU_PREBUILT names a folder where a build
host compiled the same seeded tiny model (`python benchmarks/bench_gpu.py prepare --out FOLDER`)."""
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import modelkit
from modelkit import manifest, trust
from modelkit.errors import LoadError
from modelkit.runtime import tvm_host as gpu


def _tvm_cuda_missing() -> str | None:
    why = gpu.tvm_cuda_missing()
    if why is None:
        import tvm

        from modelkit.runtime.tvm_cuda import load_cuda_runtime

        load_cuda_runtime()  # as the engine does: runtime-only TVM loads no backend at import
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


def test_loading_a_server_gpu_library_without_a_gpu_says_what_is_missing(tiny_onnx, tmp_path, monkeypatch):
    pytest.importorskip("tvm")
    if _tvm_cuda_missing() is None:
        pytest.skip("this machine can run it: see test_server_gpu_library_runs_on_the_gpu")
    lib = _tiny_server_gpu_library(tiny_onnx, tmp_path, monkeypatch)
    m = modelkit.load(lib, device="cuda")
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


def _tiny_server_gpu_library(tiny_onnx: Path, tmp_path: Path, monkeypatch) -> Path:
    """Compiled here, or built elsewhere from the same model (MODELKIT_GPU_PREBUILT; its manifest says so) and
    vouched for in a trust store of the test's own, as a user deploying it would (docs/reliability.md)."""
    prebuilt = os.environ.get("MODELKIT_GPU_PREBUILT")
    if prebuilt:
        lib = Path(prebuilt) / "tiny.server-gpu.tvm.so"
        assert manifest.read(lib).source["sha256"] == manifest.sha256_of(tiny_onnx), "built from another model"
        monkeypatch.setenv("MODELKIT_CACHE_DIR", str(tmp_path / "cache"))
        trust.record_library(lib)
        return lib
    why = gpu.tvm_compiler_missing()
    if why:
        pytest.skip(f"{why}; set MODELKIT_GPU_PREBUILT to a folder a build host prepared")
    return Path(modelkit.compile(tiny_onnx, "server-gpu", out=tmp_path / "tiny.server-gpu.tvm.so").path)


def test_server_gpu_library_runs_on_the_gpu(tiny_onnx, tmp_path, monkeypatch):
    why = _tvm_cuda_missing()
    if why:
        pytest.skip(why)
    lib = _tiny_server_gpu_library(tiny_onnx, tmp_path, monkeypatch)
    x = np.random.default_rng(0).random((1, 4)).astype(np.float32)
    got = modelkit.load(lib, device="cuda").predict(x)["probs"]
    np.testing.assert_allclose(got, modelkit.load(tiny_onnx).predict(x)["probs"], atol=1e-4)


def test_onnxruntime_cuda_provider_matches_cpu(tiny_onnx):
    why = _ort_cuda_missing()
    if why:
        pytest.skip(why)
    x = np.random.default_rng(1).random((5, 4)).astype(np.float32)
    gpu = modelkit.load(tiny_onnx, device="cuda")
    assert gpu.session.get_providers()[0] == "CUDAExecutionProvider"
    np.testing.assert_allclose(gpu.predict(x)["probs"], modelkit.load(tiny_onnx).predict(x)["probs"], atol=1e-5)


def _cuda_source() -> str:
    """The CUDA source TVM stores in a server-gpu library built on a machine without a GPU (as here, and CI)."""
    import tvm
    from tvm.script import relax as R

    @tvm.script.ir_module
    class Add:
        @R.function
        def main(x: R.Tensor((4, 4), "float32")):
            with R.dataflow():
                y = R.add(x, x)
                R.output(y)
            return y

    ex = tvm.compile(Add, target=tvm.target.Target({"kind": "cuda", "arch": "sm_90", "host": {"kind": "llvm"}}))
    pending = [ex.mod]
    while pending:
        mod = pending.pop()
        if mod.kind == "cuda":
            return mod.inspect_source("cuda")
        pending += list(mod.imports)
    raise AssertionError("no CUDA module in the build")


def test_the_kernel_source_of_a_server_gpu_library_compiles_with_nvcc():
    """What the engine's nvcc callback does on a GPU server whose TVM is runtime-only (runtime.tvm_cuda)."""
    pytest.importorskip("tvm")
    if shutil.which("nvcc") is None or gpu.tvm_compiler_missing():
        pytest.skip("needs nvcc and TVM's compiler (to make the source)")
    from modelkit.runtime.tvm_cuda import nvcc_compile

    source = _cuda_source()
    assert "__global__" in source
    assert nvcc_compile(source, "sm_90")[:4] == bytes.fromhex("50ed55ba")  # a fatbin
    with pytest.raises(LoadError, match=r"^nvcc could not compile this library's CUDA kernels for sm_90: .*error"):
        nvcc_compile("this is not CUDA", "sm_90")
