"""`--data samples.npz` on convert, verify and compile: the samples feed every parity check and say so in
the report; keys that name no input are a one-line error (exit 2) before any conversion."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from modelkit.cli import main
from modelkit.formats import manifest_path


@pytest.fixture(scope="module")
def scaled(tmp_path_factory) -> Path:
    """A two-input model: pixels behind a Rescaling, and plain features."""
    from modelkit._backend import import_keras

    keras = import_keras("tensorflow")
    keras.utils.set_random_seed(0)
    image = keras.Input((4, 4, 1), name="image")
    feats = keras.Input((3,), name="feats")
    h = keras.layers.Concatenate()([keras.layers.Flatten()(keras.layers.Rescaling(1 / 255.0)(image)), feats])
    path = tmp_path_factory.mktemp("data_option") / "scaled.keras"
    keras.Model([image, feats], keras.layers.Dense(3, name="out")(h)).save(path)
    return path


def _samples(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def _good(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    return _samples(tmp_path / "real.npz", image=rng.uniform(0, 255, (12, 4, 4, 1)).astype(np.float32),
                    feats=rng.standard_normal((12, 3)).astype(np.float32))


def test_convert_with_samples_records_them(scaled, tmp_path):
    r = CliRunner().invoke(main, ["convert", str(scaled), "--to", "onnx", "--out", str(tmp_path), "--data",
                                  str(_good(tmp_path)), "--json"])
    assert r.exit_code == 0, r.output
    (res,) = json.loads(r.stdout[r.stdout.index("["):])
    assert res["parity"]["ok"] and res["parity"]["inputs"] == "user samples (real.npz, 12 rows)"
    extra = json.loads(manifest_path(res["path"]).read_text())["extra"]["verification_inputs"]
    assert extra == {"source": "data", "label": "user samples (real.npz, 12 rows)", "ranges": {}}


def test_convert_with_wrong_keys_is_one_line_before_any_work(scaled, tmp_path):
    bad = _samples(tmp_path / "bad.npz", image=np.zeros((2, 4, 4, 1), np.float32), feat=np.zeros((2, 3), np.float32))
    r = CliRunner().invoke(main, ["convert", str(scaled), "--to", "onnx", "--out", str(tmp_path / "out"),
                                  "--data", str(bad)])
    assert r.exit_code == 2
    errors = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert errors == ["error: bad.npz: keys ['feat'] match no input; inputs ['feats'] have no samples; the model's "
                      "inputs are ['image', 'feats'], or np.savez's arr_0 to arr_1 in that order"]
    assert "Traceback" not in r.output and "converting" not in r.output  # refused before the exporter ran
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("scaled.onnx*"))


@pytest.mark.slow
def test_verify_uses_the_samples(scaled, tmp_path):
    out = tmp_path / "conv"
    runner = CliRunner()
    assert runner.invoke(main, ["convert", str(scaled), "--to", "onnx", "--out", str(out)]).exit_code == 0
    onnx_path = out / "scaled.onnx"
    r = runner.invoke(main, ["verify", str(scaled), str(onnx_path), "--data", str(_good(tmp_path)), "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout[r.stdout.index("{"):])
    assert report["ok"] and report["inputs"] == "user samples (real.npz, 12 rows)"
    r = runner.invoke(main, ["verify", str(scaled), str(onnx_path)])  # no samples: the inferred range
    assert r.exit_code == 0 and "inputs: ranges inferred from the model: 'image' in [0, 255)" in r.output
    bad = _samples(tmp_path / "wrong.npz", pixels=np.zeros((2, 4, 4, 1), np.float32))
    r = runner.invoke(main, ["verify", str(scaled), str(onnx_path), "--data", str(bad)])
    assert r.exit_code == 2
    assert r.output.strip().splitlines() == [
        "error: wrong.npz: keys ['pixels'] match no input; inputs ['image', 'feats'] have no samples; the model's "
        "inputs are ['image', 'feats'], or np.savez's arr_0 to arr_1 in that order"]


def test_compile_verifies_on_the_samples(tiny_onnx, tmp_path):
    x = _samples(tmp_path / "x.npz", x=np.random.default_rng(0).standard_normal((9, 4)).astype(np.float32))
    r = CliRunner().invoke(main, ["compile", str(tiny_onnx), "--data", str(x), "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout[r.stdout.index("{"):])
    assert res["parity"]["ok"] and res["parity"]["inputs"] == "user samples (x.npz, 9 rows)"
