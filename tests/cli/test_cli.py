"""CLI commands through click's CliRunner: exit codes, outputs and one-line errors."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from modelkit.cli import main


@pytest.fixture
def runner():
    return CliRunner()


def test_help_lists_every_command(runner):
    r = runner.invoke(main, ["--help"])
    assert r.exit_code == 0
    for name in ("train", "convert", "verify", "run", "inspect", "doctor"):
        assert name in r.output


def test_convert_json_and_verify(runner, cnn_tf, tmp_path):
    r = runner.invoke(main, ["convert", str(cnn_tf), "--to", "onnx", "--out", str(tmp_path), "--json"])
    assert r.exit_code == 0, r.output
    (res,) = json.loads(r.stdout[r.stdout.index("["):])
    assert res["format"] == "onnx" and res["parity"]["ok"]
    onnx_path = tmp_path / "cnn_tf.onnx"
    r = runner.invoke(main, ["verify", str(cnn_tf), str(onnx_path)])
    assert r.exit_code == 0, r.output
    assert "parity OK" in r.output and "probs" in r.output
    r = runner.invoke(main, ["verify", str(cnn_tf), str(onnx_path), "--atol", "1e-30"])
    assert r.exit_code == 2
    assert "error: " in r.output and "max abs error" in r.output


@pytest.mark.slow
def test_quiet_turns_progress_off_in_the_children_too_and_keeps_results(runner, cnn_tf, tmp_path, monkeypatch):
    from modelkit._text import QUIET_ENV

    monkeypatch.setenv(QUIET_ENV, "0")  # restored after the test: -q sets it for the process
    loud = runner.invoke(main, ["convert", str(cnn_tf), "--to", "onnx", "--out", str(tmp_path / "a")])
    assert loud.exit_code == 0, loud.output
    assert "[1/1] keras -> onnx: converting cnn_tf.keras" in loud.stderr  # printed by the converting child
    quiet = runner.invoke(main, ["-q", "convert", str(cnn_tf), "--to", "onnx", "--out", str(tmp_path / "b")])
    assert quiet.exit_code == 0, quiet.output
    assert "converting" not in quiet.stderr and "keras -> onnx" not in quiet.stderr, quiet.stderr
    assert "cnn_tf.onnx" in quiet.stdout and "ok" in quiet.stdout  # the result table
    assert (tmp_path / "b" / "cnn_tf.onnx").is_file()
    assert "-q, --quiet" in runner.invoke(main, ["--help"]).output
    monkeypatch.setenv(QUIET_ENV, "0")
    after = runner.invoke(main, ["convert", str(cnn_tf), "--to", "onnx", "--out", str(tmp_path / "c"), "-q"])
    assert after.exit_code == 0 and "converting" not in after.stderr, after.output  # -q after the command too
    for command in ("convert", "bench", "compile", "verify", "run", "inspect", "serve", "package", "train"):
        assert "-q, --quiet" in runner.invoke(main, [command, "--help"]).output, command


@pytest.mark.slow
def test_convert_refuses_existing_output_with_one_line(runner, converted):
    onnx_path = converted["tensorflow"]["onnx"]
    src = onnx_path.parent.parent / "cnn_tf.keras"
    r = runner.invoke(main, ["convert", str(src), "--to", "onnx", "--out", str(onnx_path.parent)])
    assert r.exit_code == 2
    assert r.output.strip().splitlines() == [f"error: {onnx_path} exists; pass --force (force=True) to overwrite it"]


def test_convert_unknown_format_lists_valid_ones(runner, cnn_tf):
    r = runner.invoke(main, ["convert", str(cnn_tf), "--to", "caffe"])
    assert r.exit_code == 2 and "valid formats: keras, onnx" in r.output


def test_run_prints_and_saves_outputs(runner, converted, tmp_path):
    x = np.random.default_rng(0).random((3, 8, 8, 1)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    onnx_path = str(converted["torch"]["onnx"])
    r = runner.invoke(main, ["run", onnx_path, "--input", str(tmp_path / "x.npy")])
    assert r.exit_code == 0, r.output
    assert "probs: float32(3, 10)" in r.output and "argmax" in r.output
    r = runner.invoke(main, ["run", onnx_path, "--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "y.npz")])
    assert r.exit_code == 0
    import modelkit

    np.testing.assert_allclose(np.load(tmp_path / "y.npz")["probs"], modelkit.load(onnx_path).predict(x)["probs"])


def test_run_bad_input_is_one_line_exit_2_and_debug_shows_traceback(runner, converted, tmp_path):
    np.save(tmp_path / "bad.npy", np.zeros((3, 8, 8), np.float32))
    args = ["run", str(converted["torch"]["onnx"]), "--input", str(tmp_path / "bad.npy")]
    r = runner.invoke(main, args)
    assert r.exit_code == 2
    assert r.output.strip() == "error: input 'image': expected rank 4 (?, 8, 8, 1), got rank 3 with shape (3, 8, 8)"
    r = runner.invoke(main, ["--debug", *args])
    assert r.exit_code == 2 and "Traceback" in r.output


def test_run_refuses_pickled_npy(runner, converted, tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    r = runner.invoke(main, ["run", str(converted["torch"]["onnx"]), "--input", str(tmp_path / "obj.npy")])
    assert r.exit_code == 2 and "without pickles" in r.output


def test_inspect_text_and_json(runner, converted):
    path = str(converted["tensorflow"]["onnx"])
    r = runner.invoke(main, ["inspect", path])
    assert r.exit_code == 0
    assert "image: float32(?, 8, 8, 1)" in r.output and "keras -> onnx" in r.output and "Conv×" in r.output
    info = json.loads(runner.invoke(main, ["inspect", path, "--json"]).output)
    assert info["format"] == "onnx" and info["onnx"]["opsets"]["ai.onnx"] == 17
    assert info["manifest"]["parity"]["ok"] and info["onnx"]["ops"]["Conv"] >= 1


def test_inspect_file_that_is_not_a_model(runner, tmp_path):
    p = tmp_path / "notes.onnx"
    p.write_text("not a model, only text pretending")
    r = runner.invoke(main, ["inspect", str(p)])
    assert r.exit_code == 2 and "not a model file of a known format" in r.output


def test_doctor_lists_engines(runner):
    r = runner.invoke(main, ["doctor", "--json"])
    assert r.exit_code == 0
    info = json.loads(r.output)
    versions = {e["package"]: e["version"] for e in info["engines"]}
    assert versions["onnxruntime"] == "1.32.0" and versions["keras"] == "3.15.1"
    assert info["machine"]["cpus"] >= 1
    assert {t["tool"] for t in info["tools"]} >= {"java", "chromium", "playwright", "xgboost", "tornado",
                                                  "aarch64-linux-gnu-g++", "qemu-aarch64 + runtime"}


def test_doctor_names_the_fix_of_each_missing_tool(runner, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no program on the PATH
    monkeypatch.delenv("MODELKIT_CHROMIUM", raising=False)
    r = runner.invoke(main, ["doctor", "--json"])
    assert r.exit_code == 0, r.output
    tools = {t["tool"]: t for t in json.loads(r.output)["tools"]}
    assert tools["java"]["found"] is None and tools["java"]["fix"] == "apt-get install -y openjdk-17-jre-headless"
    assert tools["aarch64-linux-gnu-g++"]["fix"] == "apt-get install -y gcc-aarch64-linux-gnu g++-aarch64-linux-gnu"
    assert tools["qemu-aarch64 + runtime"]["fix"].startswith("qemu-aarch64 is not installed")
    text = runner.invoke(main, ["doctor"]).output
    assert "java" in text and "missing" in text and "openjdk-17-jre-headless" in text
