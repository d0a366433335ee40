"""The top-level API: load, convert, compile, verify are callable and do real work."""
import importlib

import numpy as np

import modelkit
from tests.helpers import make_tiny_onnx


def test_public_names_exist():
    for name in modelkit.__all__:
        assert hasattr(modelkit, name), name
    importlib.import_module("modelkit.converters")  # the package has its own name: no shadowing
    assert callable(modelkit.convert) and modelkit.convert.__module__ == "modelkit"
    importlib.import_module("modelkit.optimization")  # optimize()'s package is not named optimize: not shadowed
    assert callable(modelkit.optimize) and modelkit.optimize.__module__ == "modelkit"
    assert "max_p99_ms=" in modelkit.optimize.__doc__


def test_compile_and_verify_from_the_top_level(tmp_path):
    src = make_tiny_onnx(tmp_path / "tiny.onnx")
    lib = modelkit.compile(src, "server-cpu", out=tmp_path / "tiny.tvm.so")
    lib_path = getattr(lib, "path", lib)
    report = modelkit.verify(src, lib_path)
    assert report.ok and max(o.max_abs for o in report.outputs) <= 1e-4
    x = np.random.default_rng(0).random((3, 4)).astype(np.float32)
    np.testing.assert_allclose(modelkit.load(lib_path).predict(x)["probs"], modelkit.load(src).predict(x)["probs"],
                               atol=1e-5)


def test_convert_takes_the_cli_flags_as_named_parameters(tmp_path):
    import inspect

    import pytest

    from modelkit.errors import UnsupportedConversionError

    params = inspect.signature(modelkit.convert).parameters
    for name in ("out_dir", "force", "verify", "atol", "quantize", "calibration_data", "eval_data",
                 "max_accuracy_drop", "opset", "data", "input_spec", "route", "imports"):
        assert name in params, name
    assert "quantize=" in modelkit.convert.__doc__  # an example, not only "see ..."
    src = make_tiny_onnx(tmp_path / "tiny.onnx")
    with pytest.raises(UnsupportedConversionError, match="quantization 'int8' does not apply to tvm"):
        modelkit.convert(src, "tvm", quantize="int8")  # reaches the planner, not a TypeError
    assert list(tmp_path.iterdir()) == [src]  # refused before any work
    load_params = inspect.signature(modelkit.load).parameters
    assert {"device", "threads", "format", "trust_unsafe_code", "imports"} <= set(load_params)
    assert "always returns a dict" in modelkit.load.__doc__
    probs = modelkit.load(src, format="onnx").predict(np.ones((2, 4), np.float32))["probs"]  # a bare array too
    assert probs.shape == (2, 3)


def test_compile_and_verify_have_the_cli_flags_as_parameters(tmp_path):
    import inspect

    import pytest

    from modelkit.errors import ParityError

    compile_params = inspect.signature(modelkit.compile).parameters
    assert {"target", "out", "batch", "dynamic_batch", "trials", "budget", "force", "verify", "cache_dir", "data",
            "imports", "verbose"} <= set(compile_params)
    verify_params = inspect.signature(modelkit.verify).parameters
    assert {"atol", "batch_sizes", "seed", "data", "raise_on_failure", "trust_unsafe_code", "imports",
            "verbose"} <= set(verify_params)
    assert "Example:" in modelkit.compile.__doc__ and "Example:" in modelkit.verify.__doc__
    a, b = make_tiny_onnx(tmp_path / "a.onnx"), make_tiny_onnx(tmp_path / "b.onnx", weight_scale=1.5)
    samples = tmp_path / "s.npz"
    np.savez(samples, x=np.random.default_rng(1).random((5, 4)).astype(np.float32))
    report = modelkit.verify(a, a, data=samples)  # a .npz path, as the CLI's --data
    assert report.ok and report.inputs == "user samples (s.npz, 5 rows)"
    with pytest.raises(ParityError):
        modelkit.verify(a, b, data=samples)
    assert not modelkit.verify(a, b, raise_on_failure=False).ok
