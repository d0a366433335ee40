"""`modelkit bench` input errors: exit code 2 with a clear message, before any child process starts."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from modelkit.cli import main
from modelkit.formats import Format
from modelkit.runtime import ENGINES


def bench(*args: str):
    return CliRunner().invoke(main, ["bench", *args])


def test_missing_file_is_one_line_error(tmp_path) -> None:
    result = bench(str(tmp_path / "nope.onnx"), "--iterations", "1")
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [f"error: no such file or folder: {tmp_path / 'nope.onnx'}"]


def test_unknown_format_names_the_valid_ones(tmp_path) -> None:
    junk = tmp_path / "model.bin"
    junk.write_bytes(b"\x00garbage, not a model" * 4)
    result = bench(str(junk), "--iterations", "1")
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "not a model file of a known format" in result.output
    assert "keras" in result.output and "onnx" in result.output


def _file_of(fmt: Format, folder: Path) -> Path | None:
    """A file detected as `fmt` (only its header matters: the engine check comes first)."""
    if fmt == Format.TFLITE:
        p = folder / "m.tflite"
        p.write_bytes(b"\x1c\x00\x00\x00TFL3" + b"\x00" * 64)
        return p
    if fmt == Format.TVM:
        p = folder / "m.tvm.so"
        p.write_bytes(b"\x7fELF" + b"\x00" * 64)
        (folder / "m.tvm.so.modelkit.json").write_text(json.dumps({"format": "tvm", "signature": {"inputs": []}}))
        return p
    return None


def test_format_without_an_engine_names_the_benchmarkable_ones(tmp_path, monkeypatch) -> None:
    """Every format has an engine today; an engine that is not installed must still fail clearly,
    so take one out of the table for this test (the table is what load() consults)."""
    f = _file_of(Format.TFLITE, tmp_path)
    monkeypatch.delitem(ENGINES, Format.TFLITE)
    result = bench(str(f), "--iterations", "1", "--no-baseline")
    assert result.exit_code == 2
    assert "no runtime engine for format 'tflite'" in result.output
    assert all(fmt.value in result.output for fmt in ENGINES)


def test_unsupported_device_names_the_choices(tiny_onnx) -> None:
    result = bench(str(tiny_onnx), "--device", "tpu")
    assert result.exit_code == 2
    assert "Invalid value for '--device'" in result.output and "'cpu', 'cuda'" in result.output


@pytest.mark.parametrize("batch", ["1,x", "0", ",", "-4"])
def test_bad_batch_list_is_a_usage_error(tiny_onnx, batch) -> None:
    result = bench(str(tiny_onnx), "--batch", batch)
    assert result.exit_code == 2
    assert "Invalid value for '--batch'" in result.output and "Usage:" in result.output


def test_duration_and_iterations_together_is_a_usage_error(tiny_onnx) -> None:
    result = bench(str(tiny_onnx), "--duration", "1s", "--iterations", "3")
    assert result.exit_code == 2 and "not both" in result.output


def test_bad_duration_is_one_line_error(tiny_onnx) -> None:
    result = bench(str(tiny_onnx), "--duration", "soon")
    assert result.exit_code == 2 and result.output.startswith("error: bad duration 'soon'")
