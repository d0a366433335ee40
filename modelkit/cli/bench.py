"""`modelkit bench ARTIFACT...`: latency, throughput, memory, FLOPs and ratios to Keras, per engine and batch."""
from __future__ import annotations

import click

from ._common import check_outputs, echo_json, import_option, parse_int_list


def _batches(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, ...]:
    return parse_int_list(value, "--batch")


@click.command("bench")
@click.argument("artifacts", nargs=-1, required=True, type=click.Path())
@click.option("--batch", "batches", default="1,8,32", show_default=True, callback=_batches,
              help="Comma-separated batch sizes.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Intra-op threads of every engine.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--duration", default=None, help="Timed seconds per batch size, e.g. 10s, 500ms [default: 10s].")
@click.option("--iterations", type=click.IntRange(min=1), default=None, help="Timed calls per batch size.")
@click.option("--warmup", type=click.IntRange(min=0), default=3, show_default=True, help="Untimed calls first.")
@click.option("--no-baseline", is_flag=True, help="Skip the Keras model.predict / model(x) baselines.")
@click.option("--keras-backend", type=click.Choice(["tensorflow", "torch", "jax"]), default=None,
              help="Keras backend for .keras artifacts and baselines [default: KERAS_BACKEND or tensorflow].")
@click.option("--keep-going", is_flag=True, help="Record a failing artifact as an error row and go on.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON (schema: docs/bench.md).")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), default=None, help="Also write a CSV here.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), default=None,
              help="Also write a self-contained HTML report with plots here.")
@import_option
def command(artifacts: tuple[str, ...], batches: tuple[int, ...], threads: int | None, device: str,
            duration: str | None, iterations: int | None, warmup: int, no_baseline: bool,
            keras_backend: str | None, keep_going: bool, as_json: bool, csv_path: str | None,
            report_path: str | None) -> None:
    """Benchmark ARTIFACT... (any format) at each batch size, each in its own process.

    \b
    Example:
      modelkit bench cnn.onnx cnn_saved_model --batch 1,32 --duration 2s --report bench.html
    Measures load time, first call, latency p50/p90/p99 with IQR, throughput, peak RSS, size and achieved
    GFLOP/s against the CPU's estimated peak. The source .keras (found via the manifests) is measured
    too, with model.predict and model(x), and every row shows its latency ratio to both.
    Progress goes to stderr; results to stdout.
    """
    from ..bench import run_bench
    from ..bench.stats import parse_duration

    if duration is not None and iterations is not None:
        raise click.UsageError("give --duration or --iterations, not both")
    check_outputs(csv_path, report_path)
    seconds = None if iterations is not None else parse_duration(duration or "10s")
    result = run_bench(list(artifacts), batches=batches, threads=threads, device=device, iterations=iterations,
                       duration=seconds, warmup=warmup, baseline=not no_baseline, keep_going=keep_going,
                       backend=keras_backend)
    from ..bench.report import text_table, write_csv, write_html

    if csv_path:
        click.echo(f"wrote {write_csv(result, csv_path)}", err=True)
    if report_path:
        click.echo(f"wrote {write_html(result, report_path)}", err=True)
    if as_json:
        echo_json(result)
    else:
        click.echo(text_table(result))
