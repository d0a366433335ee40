"""`modelkit verify A B`: do two artifacts compute the same thing?"""
from __future__ import annotations

import click

from ._common import echo_json, import_option, parse_int_list, table


def _batches(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, ...]:
    return parse_int_list(value, "--batch")


@click.command("verify")
@click.argument("reference", type=click.Path(exists=True))
@click.argument("candidate", type=click.Path(exists=True))
@click.option("--atol", type=click.FloatRange(min=0), default=None,
              help="Max abs error allowed, kept as given (default: the edge's, lifted where float32's own error "
                   "on an output is larger).")
@click.option("--batch", "batches", default="1,7", show_default=True, callback=_batches,
              help="Comma-separated batch sizes to test.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random inputs.")
@click.option("--data", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Real samples: a .npz keyed by input name ('x' or a .npy for a one-input model). Default: "
                   "the data set REFERENCE's manifest names, else ranges inferred from the model, else [0, 1).")
@click.option("--trust-unsafe-code", is_flag=True, help="UNSAFE: Keras safe mode off for .keras files.")
@click.option("--json", "as_json", is_flag=True, help="Print the parity report as JSON.")
@import_option
def command(reference: str, candidate: str, atol: float | None, batches: tuple[int, ...], seed: int, data: str | None,
            trust_unsafe_code: bool, as_json: bool) -> None:
    """Run REFERENCE and CANDIDATE on the same inputs and compare every output.

    \b
    Examples:
      modelkit verify cnn.keras cnn.onnx
      modelkit verify cnn.onnx cnn.tflite --data samples.npz
    Exits 0 when every output is within tolerance, 2 otherwise (or when the reference's outputs do
    not change with the inputs, which would make the check meaningless).
    """
    from .. import verify  # the Python API: one reading of --data (a .npz, or a .npy for a one-input model)
    from ..converters.parity_report import weak_warning

    report = verify(reference, candidate, atol=atol, batch_sizes=batches, seed=seed, data=data,
                    raise_on_failure=False, trust_unsafe_code=trust_unsafe_code)
    if as_json:
        echo_json(report.to_dict())
    else:
        rows = [[o.name, f"{o.max_abs:.2e}", f"{o.max_rel:.2e}", f"{o.cosine:.6f}",
                 "-" if o.argmax_agreement is None else f"{o.argmax_agreement:.3f}", "ok" if o.ok else o.reason]
                for o in report.outputs]
        click.echo(table(["output", "max abs", "max rel", "cosine", "argmax agree", "result"], rows))
        click.echo(f"inputs: {report.inputs}; cases: {', '.join(str(c['batch']) for c in report.cases)}")
        click.echo(report.summary())
    weak = weak_warning(report.to_dict())
    if weak:
        click.echo(weak, err=True)
    if not report.ok:
        _note_quantized(candidate, reference)
    report.raise_if_failed()


def _note_quantized(*paths: str) -> None:
    """A quantized artifact (its manifest says so) is not expected to match within a float atol: say so, and
    what its conversion judged it by, before the failure line."""
    from ..converters.verify import quantized_manifest

    for path in paths:
        m = quantized_manifest(path)
        if m is None:
            continue
        mode = m.quantization
        acc = (m.extra or {}).get("accuracy") or {}
        judged = (f"; its conversion judged it by accuracy: {acc['source_accuracy']:.4f} -> "
                  f"{acc['artifact_accuracy']:.4f} (drop {acc['drop']:+.4f}) on {acc['data']}"
                  if {"source_accuracy", "artifact_accuracy", "drop", "data"} <= set(acc) else "")
        if acc.get("metric") == "mae" and judged:  # a regressor's (converters.gate)
            judged = (f"; its conversion judged it by mean absolute error: {acc['source_accuracy']:.4g} -> "
                      f"{acc['artifact_accuracy']:.4g} ({acc['drop']:+.2%}) on {acc['data']}")
        click.echo(f"note: {path} is quantized ({mode}): its outputs are not expected to match the float "
                   f"model's within the parity tolerance{judged} (modelkit inspect {path})", err=True)
