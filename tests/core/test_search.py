"""Hyperparameter search with KerasTuner: a short study, its results files, resuming it, pruning, errors."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from modelkit import manifest
from modelkit._backend import import_keras
from modelkit.core import search as _search
from modelkit.core.train import train
from modelkit.errors import TrainingError
from modelkit.keras_io.files import load_keras

SPACE = {"learning_rate": {"min": 1e-4, "max": 3e-2, "log": True}, "units": [16, 64], "optimizer": ["adam", "sgd"]}


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[Path, dict]:
    import_keras()
    folder = tmp_path_factory.mktemp("search")
    summary = train(model="mlp", epochs=2, tune=True, trials=3, search=SPACE, verbose=False,
                    out=folder / "best.keras", study_dir=folder / "study")
    return folder, summary


@pytest.mark.slow
def test_short_search_saves_the_best_model(study) -> None:
    folder, summary = study
    rows = summary["search"]["results"]
    assert len(rows) == 3 and summary["search"]["trials_run_now"] == 3
    assert summary["search"]["objective"] == "val_accuracy"
    scores = [r["score"] for r in rows]
    assert summary["search"]["best_score"] == max(scores) >= scores[0]  # the best beats or equals the first
    best = summary["search"]["best_hyperparameters"]
    assert set(best) == set(SPACE) and 1e-4 <= best["learning_rate"] <= 3e-2 and best["units"] in (16, 64)
    man = manifest.read(folder / "best.keras")
    assert man.training["search"]["best_hyperparameters"] == best
    assert man.training["test_metrics"]["test_accuracy"] == summary["test_accuracy"]
    net = load_keras(folder / "best.keras")
    assert net.get_layer("dense1").units == best["units"]  # the saved model is the best trial's


def test_results_table_csv_json_and_plot(study) -> None:
    folder, summary = study
    with open(folder / "study" / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["trial"] for r in rows] == ["0", "1", "2"]
    assert {"score", "status", "epochs", "learning_rate", "units", "optimizer"} <= set(rows[0])
    assert float(rows[0]["score"]) == pytest.approx(summary["search"]["results"][0]["score"])
    data = json.loads((folder / "study" / "results.json").read_text())
    assert data["objective"] == "val_accuracy" and len(data["trials"]) == 3
    png = (folder / "study" / "results.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000
    table = _search.format_table(summary["search"]["results"], "val_accuracy")
    assert table.splitlines()[0].split()[:5] == ["trial", "status", "val_accuracy", "epochs", "pruned"]


def test_same_study_dir_continues(study) -> None:
    folder, first = study
    summary = train(model="mlp", epochs=2, tune=True, trials=4, search=SPACE, verbose=False, force=True,
                    out=folder / "best.keras", study_dir=folder / "study")
    rows = summary["search"]["results"]
    assert summary["search"]["trials_run_now"] == 1 and len(rows) == 4  # 3 reloaded + 1 new
    assert rows[:3] == first["search"]["results"]
    assert summary["search"]["best_score"] >= first["search"]["best_score"]


@pytest.mark.slow
def test_ctrl_c_keeps_the_finished_trials_and_the_same_command_continues(tmp_path: Path, monkeypatch,
                                                                          python_sigint) -> None:
    """A real SIGINT in the second trial's fourth batch: the search stops at that batch's end with one typed line
    (before, KeyboardInterrupt was raised wherever it landed, TensorFlow's tensor conversion included: a SIGSEGV
    now and then), the finished trial stays, and the same command completes the study."""
    import os
    import signal

    import_keras()
    made, trials = _search._median_stopper, []

    def stopper_with_ctrl_c(keras_, tuner, trial_id, *args):
        median = made(keras_, tuner, trial_id, *args)
        trials.append(trial_id)

        class MedianThenCtrlC(type(median)):  # the trial's own median rule, and a Ctrl-C
            def on_train_batch_begin(self, batch, logs=None):
                if len(trials) == 2 and batch == 3:
                    os.kill(os.getpid(), signal.SIGINT)

        return MedianThenCtrlC()

    monkeypatch.setattr(_search, "_median_stopper", stopper_with_ctrl_c)
    args = dict(model="mlp", epochs=2, tune=True, trials=3, search=SPACE, verbose=False, out=tmp_path / "best.keras",
                study_dir=tmp_path / "study")
    with pytest.raises(TrainingError, match=r"^search interrupted; its 1 finished trial\(s\) are kept in .*study; "
                                            r"the same command continues it$"):
        train(**args)
    assert not (tmp_path / "best.keras").exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    monkeypatch.setattr(_search, "_median_stopper", made)
    summary = train(**args)
    rows = summary["search"]["results"]
    assert len(rows) == 3 and all(r["status"] == "COMPLETED" for r in rows), rows
    assert (tmp_path / "best.keras").is_file()


@pytest.mark.slow
def test_median_rule_prunes_a_bad_trial(tmp_path: Path) -> None:
    """Seed 3 tries learning rates 0.03 and 0.02 first (both finish), then 1e-6: after its first epoch it is
    below the median of the finished trials at that epoch, so it is stopped there."""
    summary = train(model="mlp", epochs=2, tune=True, trials=3, verbose=False, out=tmp_path / "b.keras",
                    study_dir=tmp_path / "s", seed=3, search={"learning_rate": [0.03, 0.02, 1e-6]})
    rows = {r["learning_rate"]: r for r in summary["search"]["results"]}
    assert rows[1e-6]["pruned_at_epoch"] == 1 and rows[1e-6]["epochs"] == 1 and rows[1e-6]["trial"] == "2"
    assert rows[0.03]["epochs"] == rows[0.02]["epochs"] == 2 and rows[0.03]["pruned_at_epoch"] is None
    assert rows[1e-6]["score"] < 0.3 < min(rows[0.03]["score"], rows[0.02]["score"])
    assert summary["search"]["best_hyperparameters"]["learning_rate"] in (0.03, 0.02)


def test_space_errors() -> None:
    with pytest.raises(TrainingError, match="unknown search key 'colour'; searchable keys: learning_rate"):
        _search.parse_space({"colour": ["red"]})
    with pytest.raises(TrainingError, match="valid: adam, rmsprop, sgd"):
        _search.parse_space({"optimizer": ["adagrad"]})
    with pytest.raises(TrainingError, match="0 < min < max"):
        _search.parse_space({"learning_rate": {"min": 0.0, "max": 1.0, "log": True}})
    with pytest.raises(TrainingError, match=r"needs a \[search\] table"):
        _search.parse_space({})
    np.testing.assert_equal(_search.SEARCHABLE[:3], ("learning_rate", "units", "dropout"))
