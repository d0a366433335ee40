"""TVM's runtime alone (a GPU server or a board without TVM's compiler) runs libraries and refuses to compile,
saying so before any work, instead of an AttributeError from deep in TVM's importer."""
import os
import subprocess
import sys

import numpy as np
import pytest

import modelkit
from modelkit.errors import EngineNotInstalledError
from tests.helpers.cli import one_line_error

pytest.importorskip("tvm", reason="TVM is not installed (pip install 'modelkit[tvm]')")


def test_compiling_under_tvm_use_runtime_lib_is_refused_before_any_work(tiny_onnx, tmp_path, monkeypatch):
    monkeypatch.setenv("TVM_USE_RUNTIME_LIB", "1")
    with pytest.raises(EngineNotInstalledError, match=r"^compiling for 'server-cpu' needs TVM's compiler: "
                                                      r"TVM_USE_RUNTIME_LIB=1 loads TVM's runtime only"):
        modelkit.compile(tiny_onnx, "server-cpu", out=tmp_path / "tiny.tvm.so")
    assert list(tmp_path.iterdir()) == [tiny_onnx]
    line = one_line_error(["compile", str(tiny_onnx), "--target", "server-gpu", "--out", str(tmp_path / "g.tvm.so")])
    assert "compiling for 'server-gpu' needs TVM's compiler" in line


def test_a_runtime_only_tvm_package_is_recognised_without_importing_it(tmp_path):
    """The wheel's layout with libtvm_compiler.so removed, as a GPU server may carry it."""
    lib = tmp_path / "site" / "tvm" / "lib"
    lib.mkdir(parents=True)
    (lib.parent / "__init__.py").write_text("raise ImportError('tvm must not be imported to check this')\n")
    (lib / "libtvm_runtime.so").write_bytes(b"")
    probe = "from modelkit.runtime.tvm_host import tvm_compiler_missing as f; print(f())"
    env = {**os.environ, "PYTHONPATH": f"{tmp_path / 'site'}:{__file__.rsplit('/tests/', 1)[0]}"}
    env.pop("TVM_USE_RUNTIME_LIB", None)
    run = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.startswith("this TVM package has its runtime only (no libtvm_compiler.so in "), run.stdout
    (lib / "libtvm_compiler.so").write_bytes(b"")
    run = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert run.stdout.strip() == "None", run.stdout + run.stderr[-2000:]


@pytest.mark.slow
def test_a_library_compiled_here_runs_under_tvm_use_runtime_lib(tiny_onnx, tmp_path):
    """What a GPU server with TVM's runtime only does with a library a build host compiled."""
    from modelkit.runtime.tvm_host import tvm_compiler_missing

    if tvm_compiler_missing():
        pytest.skip(f"compiles the library first: {tvm_compiler_missing()}")
    lib = modelkit.compile(tiny_onnx, "server-cpu", out=tmp_path / "tiny.tvm.so").path
    x = np.random.default_rng(3).random((5, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    probe = ("import sys, numpy as np, tvm.base, modelkit; assert tvm.base._RUNTIME_ONLY; "
             f"np.save(sys.argv[1], modelkit.load({str(lib)!r}).predict(np.load(sys.argv[2]))['probs'])")
    env = {**os.environ, "TVM_USE_RUNTIME_LIB": "1", "PYTHONPATH": __file__.rsplit("/tests/", 1)[0]}
    run = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "y.npy"), str(tmp_path / "x.npy")], env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), modelkit.load(tiny_onnx).predict(x)["probs"], atol=1e-5)


def test_what_compiles_a_server_gpu_librarys_kernels_here_is_named(monkeypatch, tmp_path):
    """NVRTC only with TVM's compiler and cuda-bindings; nvcc on PATH otherwise; nothing: None, and doctor says
    what to install (a GPU server loading a library built without a GPU compiles its kernels then)."""
    import importlib.util
    import shutil

    from click.testing import CliRunner

    from modelkit.cli import main
    from modelkit.runtime.tvm_cuda import kernel_compiler

    try:
        nvrtc = importlib.util.find_spec("cuda.bindings.nvrtc") is not None
    except ImportError:
        nvrtc = False
    expected = "NVRTC" if nvrtc else "nvcc" if shutil.which("nvcc") else None
    assert kernel_compiler() == expected
    monkeypatch.setenv("TVM_USE_RUNTIME_LIB", "1")  # TVM's own NVRTC callback needs TVM's compiler
    assert kernel_compiler() == ("nvcc" if shutil.which("nvcc") else None)
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvcc
    assert kernel_compiler() is None
    out = CliRunner().invoke(main, ["doctor"]).output
    assert "kernels compiled at load by: nothing (install nvcc, or cuda-bindings with full TVM)" in out


@pytest.mark.slow
def test_a_server_gpu_library_built_without_a_gpu_is_known_to_carry_cuda_source(tiny_onnx, tmp_path):
    """Only such a library needs a CUDA compiler on the GPU server; one whose kernels TVM compiled at build (on a
    GPU host) loads without one."""
    from modelkit.runtime.tvm_cuda import carries_cuda_source
    from modelkit.runtime.tvm_host import tvm_compiler_missing, tvm_cuda_missing

    if tvm_compiler_missing() or tvm_cuda_missing() is None:
        pytest.skip("needs TVM's compiler, on a machine without a GPU (where TVM stores the kernels' source)")
    gpu = modelkit.compile(tiny_onnx, "server-gpu", out=tmp_path / "g.tvm.so").path
    cpu = modelkit.compile(tiny_onnx, "server-cpu", out=tmp_path / "c.tvm.so").path
    assert carries_cuda_source(gpu) and not carries_cuda_source(cpu)
