"""`modelkit convert`: one command to every format, each hop verified."""
from __future__ import annotations

from typing import Any

import click

from ..errors import ModelkitError
from ._common import check_outputs, echo_json, human_size, import_option, table


@click.command("convert")
@click.argument("source", type=click.Path(exists=True, dir_okay=True))
@click.option("--to", "to", required=True, metavar="FORMATS",
              help="Comma-separated target formats: onnx, saved_model, tflite, torchscript, pt2, executorch, "
                   "tvm, openvino; or 'all'.")
@click.option("--out", "-o", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Output folder (default: beside SOURCE).")
@click.option("--force", is_flag=True, help="Overwrite existing artifacts.")
@click.option("--no-verify", is_flag=True, help="Skip the parity check (not recommended).")
@click.option("--atol", type=click.FloatRange(min=0), default=None,
              help="Override every edge's max abs error, kept as given (default: the edge's own, e.g. 1e-4 for "
                   "onnx, lifted where float32's own error on an output is larger).")
@click.option("--opset", type=click.IntRange(min=1), default=None, help="ONNX opset (default: the pinned one, 17).")
@click.option("--quantize", type=click.Choice(["none", "fp16", "dynamic-int8", "int8", "bf16"]), default=None,
              help="Quantize (tflite: fp16, dynamic-int8, int8; onnx: dynamic-int8, int8; executorch: int8; "
                   "openvino: bf16, int8 by NNCF). Judged by the accuracy drop on labelled data; outputs are named "
                   "e.g. cnn.int8.tflite.")
@click.option("--calibration-data", type=click.Path(exists=True, dir_okay=False), default=None,
              help="int8 calibration samples (.npz: 'x' or one array per input name); default: the "
                   "training split named by the source's manifest.")
@click.option("--eval-data", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Labelled data for the accuracy gate of quantized hops (.npz: 'x' or per-input arrays, "
                   "and 'y': class ids or one-hot rows judge top-1 accuracy; 0/1 labels of a one-column output "
                   "and multi-hot tag rows judge binary accuracy; a class id per pixel or token (N, H, W) / (N, T) "
                   "judges a (batch, ..., classes) output by top-1 per position, except positions the Keras model "
                   "masks or labelled -1; a regressor's real-valued "
                   "targets judge the output of their shape by mean absolute error); default: the test split named by "
                   "the source's "
                   "manifest.")
@click.option("--max-accuracy-drop", type=click.FloatRange(min=0, max=1), default=None,
              help="Largest allowed accuracy drop of a quantized artifact (default 0.01); for a regressor "
                   "(real-valued 'y'), the largest relative increase of its mean absolute error (0.01: 1 %).")
@click.option("--data", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Samples to verify every hop on (.npz keyed by input name, or 'x' / a .npy for a one-input "
                   "model); default: the training data set, else ranges inferred from the model, else [0, 1).")
@click.option("--input-spec", "input_spec", multiple=True, metavar="NAME:SHAPE[:DTYPE]",
              help="An input of a model that defines none (subclassed), e.g. x:?,8:float32 ('?': dynamic, the "
                   "first dimension is the batch); repeat per input. Or a dimension a model's input leaves open, "
                   "fixed (history:?,12:int64; inputs not named keep their shapes). Default: the shapes saved with "
                   "the model.")
@click.option("--route", "route", default=None, metavar="NAMES",
              help="Use only these routes (comma-separated) for the pairs that have them, e.g. 'torch' (keras -> "
                   "onnx through torch.onnx) or 'unrolled'; default: each pair tries its routes in order "
                   "(keras->onnx: tf2onnx, torch; keras->tflite: converter, unrolled; keras->pt2: export, unrolled).")
@click.option("--max-batch", "max_batch", default=None, metavar="N",
              help="executorch: the largest batch the program plans memory for (7..4096, default 64; the engine "
                   "runs a larger batch in slices).")
@click.option("--max-length", "max_length", default=None, metavar="N",
              help="executorch: the largest size of every open dimension other than the batch (a sequence length, "
                   "an image side) that the program plans memory for (16..65536; default 128, or the longest "
                   "size under it that the model runs at).")
@click.option("--trust-unsafe-code", is_flag=True,
              help="UNSAFE: load .keras files with Keras safe mode off (runs code stored in the file).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@import_option
def command(source: str, to: str, out_dir: str | None, force: bool, no_verify: bool, atol: float | None,
            opset: int | None, quantize: str | None, calibration_data: str | None, eval_data: str | None,
            max_accuracy_drop: float | None, data: str | None, input_spec: tuple[str, ...], route: str | None,
            max_batch: str | None, max_length: str | None, trust_unsafe_code: bool, as_json: bool) -> None:
    """Convert SOURCE to other formats, verifying every hop against its source.

    \b
    Examples:
      modelkit convert cnn.keras --to onnx,saved_model
      modelkit convert cnn.keras --to all --out artifacts/ --force
      modelkit convert cnn.keras --to tflite --quantize int8 --max-accuracy-drop 0.01
      modelkit convert net.keras --to onnx --data samples.npz
      modelkit convert subclassed.keras --to all --input-spec x:?,8:float32
      modelkit convert tagger.keras --to tflite --input-spec frames:?,40,6   # unroll an RNN at length 40
      modelkit convert net.keras --to onnx --route torch
      modelkit convert cnn.keras --to executorch --max-batch 16
      modelkit convert gpt.keras --to executorch --max-length 256   # token sequences of 1..256

    Each artifact gets a manifest beside it (<artifact>.modelkit.json) with its signature, the chain
    of converters and the parity report. A hop whose outputs differ from its source beyond the edge's
    tolerance fails (exit 2) and its artifact is kept as <name>.parity-failed.<ext>. A quantized hop
    is judged by its accuracy drop on labelled data instead (recorded in the manifest). The parity
    report says which inputs fed the check (--data, the training data, inferred ranges or uniform).
    A pair with several routes tries them in order; the manifest (extra.route), --json and a line
    under the table say which route a hop took and why the ones before it failed. With several
    formats, one that fails or is refused does not stop the others: the table shows what was written,
    the error line names each failed format and why, and the exit code is 2.
    """
    from .. import convert  # the public function: the flags are its parameters

    check_outputs(out_dir)
    batch = None if max_batch is None else _executorch_bound(max_batch, to, "--max-batch")
    length = None if max_length is None else _executorch_bound(max_length, to, "--max-length")
    _warn_unused_quantize_flags(quantize, calibration_data, eval_data, max_accuracy_drop)
    try:
        results = convert(source, to, out_dir=out_dir, force=force, verify=not no_verify, atol=atol,
                          quantize=quantize, calibration_data=calibration_data, eval_data=eval_data,
                          max_accuracy_drop=max_accuracy_drop, opset=opset, data=data,
                          input_spec=list(input_spec) or None, route=route, trust_unsafe_code=trust_unsafe_code,
                          max_batch=batch, max_length=length)
    except ModelkitError as exc:  # some formats of several failed: show what was written, then the error line
        if getattr(exc, "results", None) is not None:
            _show(exc.results, as_json, exc.failures)
        raise
    _show(results, as_json, {})


def _warn_unused_quantize_flags(quantize: str | None, calibration_data: str | None, eval_data: str | None,
                                max_accuracy_drop: float | None) -> None:
    """--eval-data, --calibration-data and --max-accuracy-drop without a lossy --quantize: one warning line
    (they were silently ignored: an exact hop is judged by parity, not accuracy; use --data to verify on)."""
    given = [flag for flag, value in (("--calibration-data", calibration_data), ("--eval-data", eval_data),
                                      ("--max-accuracy-drop", max_accuracy_drop)) if value is not None]
    if given and (quantize or "none") in ("none", "fp32"):
        verb = "applies" if len(given) == 1 else "apply"
        click.echo(f"warning: {', '.join(given)} {verb} to quantized conversions only (--quantize); ignored: "
                   "each hop is judged by parity (--data: the samples to verify on)", err=True)


def _executorch_bound(value: str, to: str, flag: str) -> int:
    """--max-batch / --max-length checked before any work: an integer in the executorch edge's range, and executorch
    asked for."""
    from ..converters.keras_executorch import check_max_batch, check_max_length
    from ..errors import UnsupportedConversionError
    from ..formats import Format

    names = [t.strip() for t in to.split(",") if t.strip()]
    if "all" not in names and Format.EXECUTORCH not in {Format.parse(t) for t in names}:
        raise UnsupportedConversionError(f"{flag} applies to --to executorch only (asked: {to})")
    return check_max_batch(value) if flag == "--max-batch" else check_max_length(value)


def _show(results: list[Any], as_json: bool, failures: dict[str, str]) -> None:
    """The table (or JSON list) of the artifacts written, and a row per format that failed."""
    if as_json:
        echo_json([r.__dict__ for r in results] + [{"format": f, "error": e} for f, e in failures.items()])
        return
    from ..converters.gate_verdict import short

    rows = []
    for r in results:
        parity = "not verified" if r.parity is None else ("ok" if r.parity["ok"] else "FAILED")
        err = "-" if r.max_abs is None else f"{r.max_abs:.1e}"
        acc = "-" if not r.accuracy else short(r.accuracy)
        took = "reused" if (r.route or {}).get("reused") else f"{r.seconds:.1f} s"
        rows.append([r.format, r.path, human_size(r.size_bytes), took, parity, err, acc])
    rows += [[f, "-", "-", "-", "FAILED (below)", "-", "-"] for f in failures]
    click.echo(table(["format", "path", "size", "time", "parity", "max abs err", "accuracy (drop)"], rows))
    from ..converters.routes import describe

    for r in results:  # hops that did not take their pair's first route say which one and why
        line = describe(r.route)
        if line:
            click.echo(f"{r.format}: {line}")
    for line in _exact_on_the_way(results):
        click.echo(line)


def _exact_on_the_way(results: list[Any]) -> list[str]:
    """Why an exact artifact sits beside quantized ones: a target that quantizes at its own hop (int8 to openvino:
    NNCF on the IR) is made from an exact intermediate (`--to onnx,openvino --quantize int8` writes cnn.int8.onnx,
    cnn.onnx and cnn.int8_openvino); one line per such intermediate, naming what it feeds."""
    from pathlib import Path

    from .. import manifest as _manifest

    lines = []
    for q in results:
        if (q.quantization or "none") == "none":
            continue
        m = _manifest.read(q.path)
        src = Path((m.source or {}).get("path") or "") if m is not None else None
        for r in results:
            if (r.quantization or "none") == "none" and src is not None and Path(r.path).resolve() == src.resolve():
                checked = "parity-checked" if r.parity else "not verified"
                lines.append(f"{r.format}: {Path(r.path).name} is exact (float32, {checked}): "
                             f"{Path(q.path).name} is quantized ({q.quantization}) from it at the {q.format} hop")
    return lines
