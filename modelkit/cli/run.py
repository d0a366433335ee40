"""`modelkit run ARTIFACT --input x.npy`: run any artifact through modelkit.load."""
from __future__ import annotations

from pathlib import Path

import click

from ._common import check_outputs, echo_json, import_option, read_inputs


@click.command("run")
@click.argument("artifact", type=click.Path(exists=True))
@click.argument("input_file", metavar="[INPUT]", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option("--input", "-i", "input_path", type=click.Path(exists=True, dir_okay=False),
              help=".npy for a single-input model, or .npz keyed by input name ('x' for a one-input model; "
                   "labels 'y' are left out, as on --data). Also taken as the second argument.")
@click.option("--output", "-o", "output_path", type=click.Path(dir_okay=False), default=None,
              help="Save the outputs to this .npz instead of printing them in full.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Intra-op threads of the engine.")
@click.option("--trust-unsafe-code", is_flag=True,
              help="UNSAFE: run code the file carries (Keras Lambda layers, TorchScript / SavedModel file ops, "
                   "TVM libraries not compiled here). Only for files you trust; see docs/reliability.md.")
@click.option("--json", "as_json", is_flag=True, help="Print outputs as JSON lists.")
@import_option
def command(artifact: str, input_file: str | None, input_path: str | None, output_path: str | None, device: str,
            threads: int | None, trust_unsafe_code: bool, as_json: bool) -> None:
    """Run ARTIFACT (any format) on inputs from a .npy / .npz file (INPUT, or --input).

    \b
    Example:
      python -c "import numpy as np; np.save('x.npy', np.random.rand(2, 8, 8, 1).astype('float32'))"
      modelkit run cnn.onnx x.npy -o out.npz
    Inputs are checked against the model's signature (names, rank, fixed dims, dtype) first. A library
    compiled for a fixed batch (modelkit compile --batch N, or tuned) runs the file's rows N at a time.
    """
    import numpy as np

    from .._text import progress
    from ..converters.samples import as_inputs, fixed_batch, predict_rows
    from ..runtime import load

    if input_file and input_path:
        raise click.UsageError(f"two input files ({input_file} and --input {input_path}): give one")
    input_path = input_file or input_path
    if not input_path:
        raise click.UsageError("no input file: modelkit run ARTIFACT x.npz (or --input x.npz)")
    check_outputs(output_path)
    model = load(artifact, device=device, threads=threads, trust_unsafe_code=trust_unsafe_code)
    inputs = read_inputs(input_path)  # an .npz read as --data is on convert and verify (labels left out)
    if isinstance(inputs, dict):
        inputs = as_inputs(inputs, model.signature.input_names)
    fixed = fixed_batch(model.signature)
    if fixed and isinstance(inputs, np.ndarray) and len(model.signature.input_names) == 1:
        inputs = {model.signature.input_names[0]: inputs}
    if fixed and isinstance(inputs, dict):  # the model takes batches of `fixed` rows only: predict_rows splits
        rows = {np.shape(a)[0] for a in inputs.values() if np.ndim(a)}
        if len(rows) == 1 and rows != {fixed} and (n := rows.pop()):
            progress(f"{Path(artifact).name} takes batches of {fixed}: running the {n} rows in {-(-n // fixed)} calls")
        outputs = predict_rows(model, inputs)
    else:
        outputs = model.predict(inputs)
    if output_path:
        from .. import _atomic

        with _atomic.atomic_path(output_path, force=True) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **outputs)
        click.echo(f"saved {', '.join(outputs)} to {output_path}")
        return
    if as_json:
        echo_json({k: v.tolist() for k, v in outputs.items()})
        return
    for name, value in outputs.items():
        click.echo(f"{name}: {value.dtype}{tuple(value.shape)}")
        if value.ndim == 2 and value.shape[1] > 1:
            # shortened past 60 rows like the values below it (a 360-row eval set printed 360 labels)
            labels = np.array2string(value.argmax(-1), separator=", ", threshold=60, edgeitems=10,
                                     max_line_width=1 << 20)
            click.echo(f"  argmax: {labels}")
        click.echo(np.array2string(value, precision=4, threshold=60, edgeitems=3))

