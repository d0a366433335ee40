"""`modelkit optimize MODEL --target T`: the fastest faithful artifact for a target, chosen by measurement."""
from __future__ import annotations

import click

from ._common import check_outputs, echo_json, import_option, parse_int_list


def _names(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, ...] | None:
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else None


def _ints(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, ...] | None:
    return parse_int_list(value, "--threads") if value else None


@click.command("optimize")
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.option("--target", default="server-cpu", show_default=True,
              help="Where the artifact will run: server-cpu (measured on this machine), or edge-arm64, "
                   "mobile-arm64, edge-armv7 (another machine's: built and gated here, the smallest within the "
                   "limits chosen, latency not measured).")
@click.option("--data", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Real samples (.npz: 'x' or one array per input name) with 'y' labels (class ids or one-hot: "
                   "top-1 accuracy; 0/1 for a one-column output, multi-hot tag rows: binary accuracy; a class id per "
                   "pixel or token: top-1 per position): parity and "
                   "the accuracy gate run on them; without labels, or for a model with no output they fit (a "
                   "regressor), only exact (fp32) candidates are tried.")
@click.option("--max-accuracy-drop", type=float, default=0.01, show_default=True,
              help="Largest accuracy drop against the .keras model on --data.")
@click.option("--max-p99-ms", type=float, default=None, help="Largest p99 latency per call, ms.")
@click.option("--max-size-mb", type=float, default=None, help="Largest artifact size, MB.")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True, help="Batch size measured.")
@click.option("--budget", default="15m", show_default=True, metavar="TIME",
              help="Time for the whole search (builds, TVM tuning, measuring), e.g. 90s, 15m, 1h.")
@click.option("--out", "-o", type=click.Path(file_okay=False), default=None,
              help="Folder for the winner, report.html and candidates.json [default: MODEL_optimized beside MODEL].")
@click.option("--package", type=click.Choice(["torchserve", "triton", "tf-serving", "kserve", "browser"]),
              default=None, help="Also package the winner for this server (a folder inside --out); the search keeps "
                                 "to the formats it runs (browser: ONNX, timed here with native onnxruntime, whose "
                                 "speed is not onnxruntime-web's).")
@click.option("--formats", callback=_names, default=None, metavar="LIST",
              help="Only these formats, e.g. onnx,openvino,tflite [default: every one that fits the target].")
@click.option("--precisions", callback=_names, default=None, metavar="LIST",
              help="Only these precisions, e.g. fp32,int8 [default: fp32, fp16, bf16, dynamic-int8, int8 where "
                   "the engine has them].")
@click.option("--threads", callback=_ints, default=None, metavar="LIST",
              help="Thread counts to try, e.g. 1,4 [default: 1, the powers of two, every core].")
@click.option("--calibration-data", type=click.Path(exists=True, dir_okay=False), default=None,
              help="int8 calibration samples (.npz) [default: the model's training split, else a quarter of --data, "
                   "kept apart from the rows accuracy is judged on].")
@click.option("--rounds", type=click.IntRange(min=1, max=50), default=5, show_default=True,
              help="Interleaved measuring rounds.")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="Builds and measurements cache [default: ~/.cache/modelkit/optimize; TVM's tuning records "
                   "stay in ~/.cache/modelkit/tvm].")
@click.option("--force", is_flag=True, help="Replace an existing --out folder.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@import_option
def command(model: str, target: str, data: str | None, max_accuracy_drop: float, max_p99_ms: float | None,
            max_size_mb: float | None, batch: int, budget: str, out: str | None, package: str | None,
            formats: tuple[str, ...] | None, precisions: tuple[str, ...] | None, threads: tuple[int, ...] | None,
            calibration_data: str | None, rounds: int, cache_dir: str | None, force: bool, as_json: bool) -> None:
    """Find the fastest artifact of MODEL (.keras) for a target that meets your limits, by measuring.

    \b
    Examples:
      modelkit optimize cnn.keras --data test.npz
      modelkit optimize cnn.keras --data test.npz --max-accuracy-drop 0.005 --max-p99-ms 2 --budget 5m
      modelkit optimize cnn.keras --data test.npz --formats onnx,openvino --package triton --out deploy

    Every format x precision x thread count that fits the target is converted with its parity or accuracy gate
    on --data, then measured side by side, each in its own process, in interleaved rounds. The winner is the
    lowest median latency meeting every limit (an exact fp32 candidate is preferred when a lossy one is faster
    only within the measured noise). --out gets the winner with its manifest (the limits, every candidate's
    figures and why it won), report.html (the Pareto front of latency, accuracy drop and size) and
    candidates.json. Builds and measurements are cached: a rerun, or a changed limit, reuses them.
    """
    from ..optimization import optimize
    from ..optimization.report import text_table

    check_outputs(out, cache_dir)
    result = optimize(model, target=target, data=data, max_accuracy_drop=max_accuracy_drop, max_p99_ms=max_p99_ms,
                      max_size_mb=max_size_mb, batch=batch, budget=budget, out=out, package=package,
                      formats=formats, precisions=precisions, threads=threads, calibration_data=calibration_data,
                      rounds=rounds, force=force, cache_dir=cache_dir)
    if as_json:
        echo_json(result.to_dict())
        return
    click.echo(text_table({"candidates": result.candidates, "decision": result.decision, "limits": result.limits}))
    click.echo(f"wrote {result.path}\nwrote {result.report}" + (f"\nwrote {result.package}" if result.package else ""))
