"""The `modelkit` command: a click group whose commands live one per module and load lazily.

Only click is imported here, so `modelkit --help` stays fast; each command imports what it needs.
"""
from __future__ import annotations

import importlib
import os
import sys
import traceback
from typing import Any

import click

from .._text import QUIET_ENV

# name -> (module, one-line help shown by `modelkit --help` without importing the module)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("modelkit.cli.train", "Train a reference model on shipped data and save a .keras file."),
    "convert": ("modelkit.cli.convert", "Convert a model to other formats, verifying parity on every hop."),
    "verify": ("modelkit.cli.verify", "Compare two artifacts on the same seeded inputs."),
    "run": ("modelkit.cli.run", "Run any artifact on inputs from .npy / .npz files."),
    "inspect": ("modelkit.cli.inspect", "Show an artifact's format, signature, size, manifest and ops."),
    "bench": ("modelkit.cli.bench", "Benchmark artifacts: latency, throughput, memory, FLOPs, ratios to Keras."),
    "doctor": ("modelkit.cli.doctor", "Show which engines are installed, with versions."),
    "serve": ("modelkit.cli.serve", "Serve artifacts over HTTP (Open Inference Protocol v2 + TF Serving REST)."),
    "compile": ("modelkit.cli.compile", "Compile a model with TVM for a named target, optionally tuned."),
    "optimize": ("modelkit.cli.optimize", "Find the fastest artifact meeting accuracy, latency, size limits."),
    "targets": ("modelkit.cli.targets", "List the named compilation targets and what fits each."),
    "package": ("modelkit.cli.package", "Package an artifact for TF Serving, TorchServe, Triton, KServe or a browser."),
    "serve-static": ("modelkit.cli.serve_static", "Serve a browser bundle folder on loopback."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module = importlib.import_module(COMMANDS[name][0])
        return _with_quiet(module.command)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        from ..errors import ModelkitError

        try:
            return super().invoke(ctx)
        except ModelkitError as exc:
            _fail(ctx, exc, str(exc))
        except OSError as exc:  # a path the OS refused (permission, a file where a folder must be, ...)
            if not exc.filename:
                raise
            _fail(ctx, exc, f"{exc.filename}: {exc.strerror or exc}")


def _quiet(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    if value:  # for this process and the children it starts (modelkit._text.progress)
        os.environ[QUIET_ENV] = "1"
    return value


def _with_quiet(command: click.Command) -> click.Command:
    """`-q/--quiet` on every command too (`modelkit convert -q ...` = `modelkit -q convert ...`), unless the
    command has its own."""
    if not any("--quiet" in p.opts for p in command.params):
        command.params.append(click.Option(["-q", "--quiet"], is_flag=True, expose_value=False, callback=_quiet,
                                           help="No progress lines on stderr (results, warnings and errors still "
                                                "print)."))
    return command


def _fail(ctx: click.Context, exc: BaseException, message: str) -> None:
    """One line `error: ...` on stderr and exit code 2; the traceback (and the child's) with --debug."""
    if ctx.obj and ctx.obj.get("debug"):
        traceback.print_exc()
        child_tb = getattr(exc, "child_traceback", None)
        if child_tb:
            click.echo("--- in the child process:\n" + child_tb, err=True)
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.option("-q", "--quiet", is_flag=True,
              help="No progress lines on stderr (results, warnings and errors still print). Goes before the command: "
                   "modelkit -q convert ...")
@click.version_option(package_name="modelkit")
@click.pass_context
def main(ctx: click.Context, debug: bool, quiet: bool) -> None:
    """modelkit: train, convert, verify, compile, run and serve models, with parity proven on every hop.

    \b
    Typical flow:
      modelkit train --model cnn --data digits --epochs 5 --out cnn.keras
      modelkit convert cnn.keras --to onnx,saved_model
      modelkit inspect cnn.onnx
      modelkit run cnn.onnx --input x.npy

    Errors print one line and exit with code 2; add --debug for the traceback. Progress goes to stderr,
    results to stdout; -q turns the progress off.
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    from .._backend import quiet_engines

    quiet_engines()  # TensorFlow's C++ log lines (oneDNN, absl) stay out of every command
    if quiet:  # for this process and the children it starts (modelkit._text.progress)
        os.environ[QUIET_ENV] = "1"
