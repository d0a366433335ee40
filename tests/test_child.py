"""modelkit._child: the one runner of child processes (conversion, training, benchmark and distributed workers)."""
from __future__ import annotations

import io
import os
import sys
import time

import pytest

from modelkit import _child
from modelkit.errors import ConversionError, ShapeError, TrainingError, WorkerError

HERE = "tests.test_child"


# --- run in the child ------------------------------------------------------------------------------------------
def echo(value: object) -> object:
    print(f"progress: working on {value}", flush=True)
    return {"got": value, "pid": os.getpid()}


def raise_shape() -> None:
    raise ShapeError("input 'x' expects (None, 4), got (2, 5)")


def raise_foreign() -> None:
    raise ZeroDivisionError("division by zero")


def raise_keras_style() -> None:
    raise RuntimeError("Exception encountered when calling Deform.call().\n\n\x1b[1mUnsupported value kind: Tensor"
                       "\x1b[0m\n\nArguments received by Deform.call():\n  \u2022 inputs=['torch.Tensor(...)']")


def raise_bare_assert() -> None:
    raise AssertionError


def die(code: int) -> None:
    sys.stdout.flush()
    os._exit(code)


def sleep(seconds: float) -> None:
    time.sleep(seconds)


def leave_temp_files(then_sleep: float = 0.0) -> str:
    """What a conversion child does: a temporary folder with a file in it, never removed by this process (the
    child ends with os._exit, which skips atexit handlers; a killed one runs nothing at all)."""
    import tempfile

    folder = tempfile.mkdtemp(prefix="modelkit-saved-model-")
    with open(os.path.join(folder, "weights.bin"), "wb") as f:
        f.write(b"0" * 1024)
    time.sleep(then_sleep)
    return folder


def imports_keras() -> dict:
    """What importing Keras, then TFLite's converter, pulled in; then jax, imported on purpose."""
    import keras
    import tensorflow as tf
    from keras.src.callbacks import orbax_checkpoint

    loaded = {"backend": keras.backend.backend(), "jax": "jax" in sys.modules,
              "converter": tf.lite.TFLiteConverter.__name__, "orbax": orbax_checkpoint.OrbaxCheckpoint.__name__}
    import jax

    return {**loaded, "jax_later": jax.numpy.add(1, 2).item()}


# --- the tests -------------------------------------------------------------------------------------------------
def test_run_returns_the_childs_result_from_another_process() -> None:
    got = _child.run(f"{HERE}:echo", {"value": [1, 2]})
    assert got["got"] == [1, 2] and got["pid"] != os.getpid()


def test_a_modelkit_error_comes_back_with_its_type_message_and_the_childs_traceback() -> None:
    with pytest.raises(ShapeError, match=r"expects \(None, 4\), got \(2, 5\)") as info:
        _child.run(f"{HERE}:raise_shape", {})
    assert "raise_shape" in info.value.child_traceback


@pytest.mark.parametrize("error", [WorkerError, TrainingError, ConversionError])
def test_a_foreign_error_comes_back_as_the_callers_error_class(error) -> None:
    with pytest.raises(error, match="^ZeroDivisionError: division by zero$"):
        _child.run(f"{HERE}:raise_foreign", {}, error=error)


def test_a_foreign_error_comes_back_in_one_line_with_kerass_reason() -> None:
    """nc83: the CLI printed Keras' four-line message (its reason in terminal bold) as the error line."""
    with pytest.raises(ConversionError, match=r"^RuntimeError: Exception encountered when calling Deform\.call\(\)\. "
                                              r"Unsupported value kind: Tensor$") as info:
        _child.run(f"{HERE}:raise_keras_style", {}, error=ConversionError)
    assert "Arguments received" in info.value.child_traceback


def test_a_foreign_error_without_a_message_says_where_it_was_raised() -> None:
    """A bare `assert` in an engine (TVM's dlight) came back as "AssertionError: AssertionError"."""
    with pytest.raises(ConversionError, match=r"^AssertionError: no message; raised at tests/test_child\.py:\d+ "
                                              r"in raise_bare_assert$"):
        _child.run(f"{HERE}:raise_bare_assert", {}, error=ConversionError)


def test_a_child_that_dies_without_a_result_is_a_typed_error_naming_the_work_and_exit_code() -> None:
    with pytest.raises(WorkerError, match=r"^the benchmark of a\.onnx died in its child process \(exit code 3\)"):
        _child.run(f"{HERE}:die", {"code": 3}, what="the benchmark of a.onnx")


def test_a_child_past_its_timeout_is_killed_and_reported() -> None:
    t0 = time.monotonic()
    with pytest.raises(TrainingError, match=r"^training did not finish within 1 s$"):
        _child.run(f"{HERE}:sleep", {"seconds": 120}, timeout=1, error=TrainingError, what="training")
    assert time.monotonic() - t0 < 60  # killed, not waited for


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """This test's own temporary root, for this process and its children alike."""
    import tempfile

    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setenv("TMPDIR", str(root))
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def test_a_childs_temporary_files_are_removed_when_it_ends(private_tmp) -> None:
    folder = _child.run(f"{HERE}:leave_temp_files", {})
    assert folder.startswith(str(private_tmp)) and "modelkit-saved-model-" in folder
    assert list(private_tmp.iterdir()) == []


def test_a_killed_childs_temporary_files_are_removed_too(private_tmp) -> None:
    with pytest.raises(WorkerError, match="did not finish within 5 s"):
        _child.run(f"{HERE}:leave_temp_files", {"then_sleep": 120}, timeout=5)
    assert list(private_tmp.iterdir()) == []


def test_output_is_relayed_line_by_line_when_stderr_is_not_a_real_file(monkeypatch) -> None:
    sink = io.StringIO()  # what CliRunner and notebooks give: no file descriptor
    monkeypatch.setattr(sys, "stderr", sink)
    _child.run(f"{HERE}:echo", {"value": "relay"})
    assert "progress: working on relay\n" in sink.getvalue()


def test_quiet_children_print_nothing(monkeypatch) -> None:
    sink = io.StringIO()
    monkeypatch.setattr(sys, "stderr", sink)
    _child.run(f"{HERE}:echo", {"value": "hush"}, quiet=True)
    assert sink.getvalue() == ""


def test_started_children_run_side_by_side_and_report_each(tmp_path) -> None:
    kids = [_child.start(f"{HERE}:echo", {"value": i}, tmp_path / f"{i}.json", what=f"worker {i}") for i in range(2)]
    bad = _child.start(f"{HERE}:raise_foreign", {}, tmp_path / "bad.json", error=TrainingError, what="worker 2")
    for k in (*kids, bad):
        k.proc.wait(timeout=120)
    assert [k.result()["got"] for k in kids] == [0, 1]
    assert not any(k.failed() for k in kids) and bad.failed()
    with pytest.raises(TrainingError, match="ZeroDivisionError"):
        bad.result()


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["tensorflow", "torch", "jax"])
def test_keras_in_a_child_imports_jax_only_under_the_jax_backend(backend) -> None:
    """Keras' orbax callback and TensorFlow's TFLite utilities import jax at their own import, to no use under
    tensorflow or torch (~0.5 s of CPU per child): a child of those backends skips it, and can still import it."""
    got = _child.run(f"{HERE}:imports_keras", {}, backend=backend)
    assert got == {"backend": backend, "jax": backend == "jax", "converter": "TFLiteConverterV2",
                   "orbax": "OrbaxCheckpoint", "jax_later": 3}
