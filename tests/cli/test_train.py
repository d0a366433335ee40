"""`modelkit train` through the click group, as a user runs it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from modelkit import manifest
from modelkit.cli import main


def test_help_lists_choices_and_an_example() -> None:
    result = CliRunner().invoke(main, ["train", "--help"])
    assert result.exit_code == 0
    for word in ("adam", "rmsprop", "sgd", "tensorflow", "torch", "jax", "mlp", "cnn", "multi_io",
                 "mobilenetv2", "lstm", "gru", "transformer", "separable", "autoencoder", "digits", "--force",
                 "--json", "modelkit train --model cnn", "--config", "--resume", "--tune", "--trials", "--budget",
                 "--study-dir", "--workers", "--devices", "--patience", "--schedule", "cosine", "--l1",
                 "--batch-norm", "--loss", "--history-csv", "file.py:function"):
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


def test_custom_model_file_and_loss(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "custom_layer.py"
    out = tmp_path / "custom.keras"
    result = CliRunner().invoke(main, ["train", "--model", f"{example}:build", "--loss", "FocalLoss", "--epochs", "1",
                                       "--lr", "0.01", "--units", "16", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert float(result.stdout.split()[2]) > 0.3
    assert f"MODELKIT_IMPORTS={example}" in result.stderr  # how to convert it
    training = manifest.read(out).training
    assert training["loss"] == "FocalLoss" and training["params"] == 64 * 16 * 2 + 16 * 2 + 16 * 10 + 10


@pytest.mark.slow
def test_autoencoder_prints_its_test_metrics(tmp_path: Path) -> None:
    out = tmp_path / "ae.keras"
    result = CliRunner().invoke(main, ["train", "--model", "autoencoder", "--epochs", "1", "--lr", "0.01", "-q",
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    line = result.stdout.strip()
    assert line.startswith("test loss 0.") and "mae" in line and line.endswith(str(out.resolve()))
    printed = float(line.split()[2].rstrip(","))
    assert manifest.read(out).training["test_metrics"]["test_loss"] == pytest.approx(printed, abs=1e-4)


def test_bad_model_path_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["train", "--model", "missing.py:build", "--out", str(tmp_path / "m.keras")])
    assert result.exit_code == 2 and "user model file not found: missing.py" in result.output
    assert result.output.count("\n") == 1


EXAMPLE_MODEL = f"{Path(__file__).resolve().parents[2] / 'examples' / 'custom_layer.py'}:build"


@pytest.mark.slow
@pytest.mark.parametrize("model", ["mlp", EXAMPLE_MODEL], ids=["zoo", "users-file"])
def test_ctrl_c_on_the_cli_saves_a_checkpoint_and_resume_finishes(tmp_path, model):
    """A real SIGINT to `modelkit train` (not a callback raising KeyboardInterrupt): the checkpoint is
    saved, the typed message names it, and --resume continues from that epoch. From a user's model file, the
    resuming process imports that file before loading the checkpoint (before: "Could not locate class
    'GatedDense'")."""
    import subprocess
    import sys
    import time

    from tests.helpers import cli_process, ctrl_c

    out = tmp_path / "mlp.keras"
    args = ["train", "--model", model, "--epochs", "200", "--out", str(out)]
    lines = []
    with cli_process(*args) as proc:
        deadline = time.monotonic() + 240
        for line in proc.stdout:  # wait until two epochs are done
            lines.append(line)
            if line.startswith("epoch 2/200") or time.monotonic() > deadline:
                break
        rest = ctrl_c(proc, timeout=120)
    text = "".join(lines) + rest
    assert proc.returncode == 2, text[-2000:]
    assert "error: interrupted after" in text and "of 200 epochs; checkpoint saved" in text
    assert not out.exists()
    resume = [sys.executable, "-m", "modelkit", *args[:-4], "--epochs", "4", "--out", str(out), "--resume"]
    done = subprocess.run(resume, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "epoch 4/4" in done.stderr and "epoch 1/4" not in done.stderr and out.is_file()
