"""`modelkit train`: train a model (reference or your own) and save a .keras file with its manifest.

Every flag is also a key of a TOML config (`--config train.toml`); flags override the file. Flags
default to None here so that only the flags actually given override the file (the real defaults are
modelkit.core.config.TrainConfig's, shown in the help text).
"""
from __future__ import annotations

import json
from typing import Any

import click

from .._backend import BACKENDS
from ..core.catalog import MODELS
from ..core.config import OPTIMIZERS, SCHEDULES
from ..core.data import DATASETS
from ._common import check_outputs

_MODELS_HELP = ", ".join(MODELS)


@click.command("train", context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="TOML file with any of these options as keys (learning_rate for --lr), plus a [search] "
                   "table for --tune. Flags given here override the file.")
@click.option("--model", help=f"Reference architecture ({_MODELS_HELP}) or your own 'path/to/file.py:function' "
                              "returning a keras.Model (imports and runs that file). [default: cnn]")
@click.option("--data", help=f"{', '.join(DATASETS)} (ships offline), or a .npz file (x, y [, x_test, y_test]) or "
                             ".csv file (header + label column). [default: digits]")
@click.option("--label-column", help="Label column of a .csv data file. [default: label]")
@click.option("--epochs", type=click.IntRange(min=1), help="[default: 5]")
@click.option("--backend", type=click.Choice(list(BACKENDS)), default=None,
              help="Keras backend to train under [default: KERAS_BACKEND, else tensorflow]. "
                   "The .keras file loads under any backend.")
@click.option("--optimizer", type=click.Choice(list(OPTIMIZERS)), help="sgd uses --momentum. [default: adam]")
@click.option("--lr", "--learning-rate", "learning_rate", type=click.FloatRange(min=0, min_open=True),
              help="Learning rate. [default: 0.001]")
@click.option("--momentum", type=click.FloatRange(min=0), help="SGD momentum. [default: 0.9]")
@click.option("--schedule", type=click.Choice(list(SCHEDULES)), help="Learning-rate schedule. [default: constant]")
@click.option("--decay-rate", type=click.FloatRange(min=0, max=1, min_open=True),
              help="Exponential schedule: factor per epoch. [default: 0.9]")
@click.option("--l1", type=click.FloatRange(min=0), help="L1 penalty on every Conv/Dense kernel. [default: 0]")
@click.option("--l2", type=click.FloatRange(min=0), help="L2 penalty on every Conv/Dense kernel. [default: 0]")
@click.option("--dropout", type=click.FloatRange(min=0, max=1, max_open=True),
              help="Dropout rate before the classifier. [default: 0]")
@click.option("--batch-norm/--no-batch-norm", default=None,
              help="Batch normalization on or off [default: the architecture's own].")
@click.option("--units", type=click.IntRange(min=1), help="Model width: hidden units, filters or model dimension.")
@click.option("--loss", help="Keras loss name, or a registered custom loss ('package>Name' or 'Name').")
@click.option("--import", "imports", multiple=True, metavar="MODULE_OR_FILE",
              help="A module (looked up in the current folder first) or .py file that registers custom Keras "
                   "layers or losses; imported before training, recorded in the manifest; repeatable.")
@click.option("--batch-size", type=click.IntRange(min=1), help="[default: 64]")
@click.option("--seed", type=int, help="Seeds the data split, the initial weights and the shuffling. [default: 0]")
@click.option("--patience", type=click.IntRange(min=0), help="Early stopping on val_loss after N bad epochs (0: off).")
@click.option("--checkpoint-dir", type=click.Path(file_okay=False),
              help="Resume checkpoints and best.keras [default: <out>.ckpt, removed when the run completes].")
@click.option("--resume", is_flag=True, default=None,
              help="Continue an interrupted run (Ctrl-C saves a checkpoint) with its optimizer state and epoch.")
@click.option("--history-csv", type=click.Path(dir_okay=False), help="Write the per-epoch history as CSV.")
@click.option("--history-json", type=click.Path(dir_okay=False), help="Write the per-epoch history as JSON.")
@click.option("--tune", is_flag=True, default=None, help="Hyperparameter search over the config's [search] table.")
@click.option("--trials", type=click.IntRange(min=1), help="Search: total trials in the study. [default: 10]")
@click.option("--budget", help="Search: time budget, e.g. 90s, 10m, 1h (no new trial starts after it).")
@click.option("--study-dir", type=click.Path(file_okay=False),
              help="Search: study folder; the same folder continues a study. [default: <out>.study]")
@click.option("--tuner", type=click.Choice(["random", "bayesian"]), help="Search algorithm. [default: random]")
@click.option("--devices", type=click.IntRange(min=1), help="Data-parallel over N devices per worker (JAX).")
@click.option("--workers", type=click.IntRange(min=1), help="N local worker processes (JAX distributed, 127.0.0.1).")
@click.option("--timeout", type=click.FloatRange(min=1), help="Seconds allowed for --devices/--workers runs.")
@click.option("--out", "-o", type=click.Path(),
              help="Output .keras file, or a folder (created when missing) to write <model>.keras in; a manifest "
                   "<out>.modelkit.json is written beside it. [default: model.keras]")
@click.option("--force", is_flag=True, default=None, help="Overwrite an existing output file.")
@click.option("--json", "as_json", is_flag=True, help="Print the training summary as JSON on stdout.")
@click.option("-q", "--quiet", is_flag=True, help="Do not print per-epoch progress (on stderr).")
def command(config_file: str | None, as_json: bool, quiet: bool, imports: tuple[str, ...], **flags: Any) -> None:
    """Train a model on shipped or your own data and save it as a .keras file.

    Training is seeded, test metrics are measured on a held-out split and stored in the manifest,
    and the file is written atomically: an existing file is kept unless --force.

    \b
    Examples:
      modelkit train --model cnn --data digits --epochs 5 --out cnn.keras
      modelkit train --model mlp --backend torch --optimizer sgd --lr 0.01 --out mlp.keras
      modelkit train --config train.toml --epochs 20          # the flag overrides the file
      modelkit train --model examples/custom_layer.py:build --loss FocalLoss --out custom.keras
      modelkit train --config search.toml --tune --trials 20 --study-dir study/
      modelkit train --model mlp --backend jax --workers 2 --batch-size 64 --out dp.keras
    """
    from ..core.train import train  # light; Keras loads only when training starts

    given = {k: v for k, v in flags.items() if v is not None}
    check_outputs(*(given.get(k) for k in ("out", "history_csv", "history_json", "checkpoint_dir", "study_dir")))
    if imports:
        given["imports"] = list(imports)
    if quiet:
        given["verbose"] = False
    summary = train(config_file, **given)
    if as_json:
        click.echo(json.dumps(summary, indent=2, default=str))
        return
    click.echo(_result_line(summary))


def _result_line(summary: dict[str, Any]) -> str:
    metrics = summary.get("test_metrics") or {}
    if summary.get("test_accuracy") is not None:
        head = f"test accuracy {summary['test_accuracy']:.4f}"
    else:
        head = "test " + ", ".join(f"{k.removeprefix('test_')} {v:.4f}" for k, v in metrics.items())
    what = f"{summary['backend']}, {summary['epochs']} epochs"
    if summary.get("search"):
        what += f", best of {summary['search']['trials']} trials"
    if summary.get("distribution"):
        d = summary["distribution"]
        what += f", {d['workers']} worker(s) x {d['devices'] // max(1, d['workers'])} device(s)"
    return f"{head} ({what}); saved {summary['path']}"
