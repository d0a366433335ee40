"""modelkit.core.config and the config file of `modelkit train`: keys, overrides, errors, user data files."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from modelkit import manifest
from modelkit.cli import main
from modelkit.core import config, data
from modelkit.core.train import resolve_config, train
from modelkit.errors import TrainingError


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_file_values_and_flag_overrides(tmp_path: Path) -> None:
    cfg_file = _write(tmp_path / "train.toml", 'model = "mlp"\nepochs = 7\nlr = 0.05\nout = "sub/m.keras"\n'
                                               'schedule = "cosine"\nbatch_norm = false\n\n'
                                               '[search]\nunits = [16, 32]\n')
    cfg = resolve_config(cfg_file, epochs=2, optimizer="sgd")
    assert (cfg.model, cfg.epochs, cfg.optimizer, cfg.learning_rate) == ("mlp", 2, "sgd", 0.05)
    assert cfg.schedule == "cosine" and cfg.batch_norm is False and cfg.search == {"units": [16, 32]}
    assert cfg.out == str((tmp_path / "sub" / "m.keras").resolve())  # relative to the file's folder
    assert cfg.backend in ("tensorflow", "torch", "jax")


def test_unknown_key_names_the_valid_ones(tmp_path: Path) -> None:
    cfg_file = _write(tmp_path / "t.toml", 'model = "mlp"\nlearning_rat = 0.1\n')
    with pytest.raises(TrainingError) as info:
        resolve_config(cfg_file)
    msg = str(info.value)
    assert "unknown config key 'learning_rat'" in msg
    for key in ("learning_rate", "epochs", "patience", "search", "workers"):
        assert key in msg
    with pytest.raises(TrainingError, match="unknown config key 'colour'"):
        train(colour="red")


@pytest.mark.parametrize("text, message", [
    ('epochs = "five"\n', "'epochs' must be a int"),
    ('optimizer = "adagrad"\n', "valid optimizers: adam, rmsprop, sgd"),
    ('schedule = "step"\n', "valid schedules: constant, cosine, exponential"),
    ('dropout = 1.5\n', "dropout"),
    ('out = "m.h5"\n', "must be a .keras file"),
    ('budget = "soon"\n', "budget"),
    ('epochs = [\n', "not a readable TOML config"),
])
def test_bad_values(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(TrainingError, match=message):
        resolve_config(_write(tmp_path / "t.toml", text))


def test_bad_paths(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="config file not found"):
        resolve_config(tmp_path / "missing.toml")
    with pytest.raises(TrainingError, match="user model file not found"):
        train(model=str(tmp_path / "nope.py:build"), out=tmp_path / "m.keras")
    with pytest.raises(TrainingError, match="data file not found"):
        train(data=str(tmp_path / "nope.npz"), out=tmp_path / "m.keras")
    with pytest.raises(TrainingError, match="no such Python file to import"):
        train(imports=[str(tmp_path / "nope.py")], out=tmp_path / "m.keras")
    assert not list(tmp_path.iterdir())


def test_budget_parsing() -> None:
    assert config.parse_budget("90s") == 90 and config.parse_budget("10m") == 600
    assert config.parse_budget("1.5h") == 5400 and config.parse_budget("42") == 42


@pytest.mark.slow
def test_cli_config_with_override(tmp_path: Path) -> None:
    cfg_file = _write(tmp_path / "train.toml", 'model = "mlp"\nepochs = 3\nlearning_rate = 0.01\n'
                                               'out = "from_file.keras"\nhistory_json = "h.json"\n')
    result = CliRunner().invoke(main, ["train", "--config", str(cfg_file), "--epochs", "1", "-q", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["epochs"] == 1 and summary["learning_rate"] == 0.01 and summary["model"] == "mlp"
    assert summary["path"] == str((tmp_path / "from_file.keras").resolve())
    hist = json.loads((tmp_path / "h.json").read_text())
    assert len(hist["epochs"]) == 1 and hist["history"]["loss"] == summary["history"]["loss"]
    man = manifest.read(tmp_path / "from_file.keras")
    assert man.training["test_metrics"]["test_accuracy"] == summary["test_accuracy"] > 0.3


def test_cli_unknown_config_key_is_one_line(tmp_path: Path) -> None:
    cfg_file = _write(tmp_path / "t.toml", "epoch = 3\n")
    result = CliRunner().invoke(main, ["train", "--config", str(cfg_file)])
    assert result.exit_code == 2 and "unknown config key 'epoch'; valid keys: model, data" in result.output
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_user_npz_with_test_split_and_csv(tmp_path: Path) -> None:
    ds = data.load_digits_split()
    npz = tmp_path / "d.npz"
    np.savez(npz, x=ds.x_train[:300, ..., 0], y=ds.y_train[:300], x_test=ds.x_test[:50, ..., 0],
             y_test=ds.y_test[:50])
    loaded = data.load(str(npz))
    assert loaded.x_train.shape == (300, 8, 8) and loaded.y_test.shape == (50,) and loaded.y_train.dtype == np.int64
    csv = tmp_path / "d.csv"
    rows = np.concatenate([ds.x_train[:200].reshape(200, 64), ds.y_train[:200, None]], axis=1)
    header = ",".join([*(f"p{i}" for i in range(64)), "digit"])
    np.savetxt(csv, rows, delimiter=",", header=header, comments="", fmt="%.6g")
    with pytest.raises(TrainingError, match="no label column 'label'"):
        data.load(str(csv))
    from_csv = data.load(str(csv), label_column="digit")
    assert from_csv.x_train.shape == (160, 64) and from_csv.x_test.shape == (40, 64)  # 20 % held out
    summary = train(model="cnn", data=str(csv), label_column="digit", epochs=1, verbose=False,
                    out=tmp_path / "c.keras")
    assert summary["test_metrics"]["test_accuracy"] >= 0.0 and len(summary["history"]["loss"]) == 1
    bad = tmp_path / "bad.npz"
    np.savez(bad, features=np.zeros((4, 2)))
    with pytest.raises(TrainingError, match="needs arrays 'x' and 'y'"):
        data.load(str(bad))


def test_out_may_be_a_folder_as_for_convert_and_compile(tmp_path: Path) -> None:
    assert config.make({"model": "mlp", "out": "models"}).out == str(Path("models") / "mlp.keras")
    built = config.make({"model": "src/mybuild.py:build", "out": str(tmp_path / "trained")})
    assert built.out == str(tmp_path / "trained" / "mybuild.keras")  # named after the builder's file
    with pytest.raises(TrainingError, match="must be a .keras file or a folder, got 'm.h5'"):
        config.make({"out": "m.h5"})
