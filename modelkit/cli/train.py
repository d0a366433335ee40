"""`modelkit train`: train a reference model on shipped data and save a .keras file with its manifest."""
from __future__ import annotations

import json

import click

from .._backend import BACKENDS
from ..core.data import DATASETS
from ..core.train import OPTIMIZERS
from ..core.zoo import MODELS


@click.command("train", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--model", "model", type=click.Choice(list(MODELS)), default="cnn", show_default=True,
              help="Reference architecture: mlp (dense), cnn (small conv net), multi_io (two inputs, two "
                   "outputs), mobilenetv2 (Keras application, random init).")
@click.option("--data", type=click.Choice(list(DATASETS)), default="digits", show_default=True,
              help="Data set (ships offline; nothing is downloaded).")
@click.option("--epochs", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--backend", type=click.Choice(list(BACKENDS)), default=None,
              help="Keras backend to train under [default: KERAS_BACKEND, else tensorflow]. "
                   "The .keras file loads under any backend.")
@click.option("--optimizer", type=click.Choice(list(OPTIMIZERS)), default="adam", show_default=True,
              help="sgd uses momentum 0.9.")
@click.option("--lr", "learning_rate", type=click.FloatRange(min=0, min_open=True), default=1e-3,
              show_default=True, help="Learning rate.")
@click.option("--l2", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="L2 penalty on every Conv/Dense kernel.")
@click.option("--dropout", type=click.FloatRange(min=0, max=1, max_open=True), default=0.0, show_default=True,
              help="Dropout rate before the classifier.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seeds the data split, the initial weights and the shuffling.")
@click.option("--out", type=click.Path(dir_okay=False), default="model.keras", show_default=True,
              help="Output .keras file; a manifest <out>.modelkit.json is written beside it.")
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@click.option("--json", "as_json", is_flag=True, help="Print the training summary as JSON on stdout.")
@click.option("-q", "--quiet", is_flag=True, help="Do not print per-epoch progress (on stderr).")
def command(model: str, data: str, epochs: int, backend: str | None, optimizer: str, learning_rate: float,
            l2: float, dropout: float, batch_size: int, seed: int, out: str, force: bool, as_json: bool,
            quiet: bool) -> None:
    """Train a reference model on shipped data and save it as a .keras file.

    Training is seeded, the test accuracy is measured on a held-out split, and the file is written
    atomically: an existing file is kept unless --force.

    \b
    Examples:
      modelkit train --model cnn --data digits --epochs 5 --out cnn.keras
      modelkit train --model mlp --backend torch --optimizer sgd --lr 0.01 --out mlp.keras
      modelkit train --model multi_io --l2 1e-4 --dropout 0.2 --json --out multi.keras
    """
    from ..core.train import train  # light; Keras loads only when training starts

    summary = train(model=model, data=data, epochs=epochs, backend=backend, optimizer=optimizer,
                    learning_rate=learning_rate, l2=l2, dropout=dropout, batch_size=batch_size, seed=seed,
                    out=out, force=force, verbose=not quiet)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        click.echo(f"test accuracy {summary['test_accuracy']:.4f} ({summary['backend']}, "
                   f"{summary['epochs']} epochs); saved {summary['path']}")
