"""`modelkit train` through the click group, as a user runs it."""
from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from modelkit import manifest
from modelkit.cli import main


def test_help_lists_choices_and_an_example() -> None:
    result = CliRunner().invoke(main, ["train", "--help"])
    assert result.exit_code == 0
    for word in ("adam", "rmsprop", "sgd", "tensorflow", "torch", "jax", "mlp", "cnn", "multi_io",
                 "mobilenetv2", "digits", "--force", "--json", "modelkit train --model cnn"):
        assert word in result.output, word


def test_tiny_run_prints_accuracy_and_path(tmp_path: Path) -> None:
    out = tmp_path / "mlp.keras"
    result = CliRunner().invoke(main, ["train", "--model", "mlp", "--epochs", "2", "--lr", "0.01",
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("test accuracy 0.") and last.endswith(str(out.resolve()))
    assert float(last.split()[2]) > 0.5
    assert "epoch 2/2" in result.stderr  # progress goes to stderr, results to stdout
    assert manifest.read(out).training["epochs"] == 2


def test_json_summary(tmp_path: Path) -> None:
    out = tmp_path / "m.keras"
    result = CliRunner().invoke(main, ["train", "--model", "mlp", "--epochs", "1", "--optimizer", "sgd",
                                       "--seed", "3", "--json", "-q", "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["optimizer"] == "sgd" and summary["seed"] == 3 and summary["path"] == str(out.resolve())
    assert summary["test_accuracy"] == manifest.read(out).training["test_accuracy"]
    assert result.stderr == ""


def test_bad_optimizer_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["train", "--optimizer", "adagrad", "--out", str(tmp_path / "m.keras")])
    assert result.exit_code == 2
    assert "Invalid value for '--optimizer'" in result.output and "'adam', 'rmsprop', 'sgd'" in result.output
    assert not list(tmp_path.iterdir())


def test_existing_output_needs_force(tmp_path: Path) -> None:
    out = tmp_path / "m.keras"
    out.write_bytes(b"keep me")
    result = CliRunner().invoke(main, ["train", "--model", "mlp", "--epochs", "1", "--out", str(out)])
    assert result.exit_code == 2
    assert "exists" in result.output and "--force" in result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output  # one clear line
    assert out.read_bytes() == b"keep me"
