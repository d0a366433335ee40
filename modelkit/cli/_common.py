"""Small helpers shared by CLI commands: JSON output, option parsing, output checks; sizes and tables
(modelkit._text) and input files (modelkit.input_files) re-exported."""
from __future__ import annotations

import json
import math
from typing import Any, Callable

import click

from .._atomic import check_creatable
from .._text import human_size, table
from ..input_files import read_inputs

__all__ = ["echo_json", "human_size", "table", "read_inputs", "parse_int_list", "check_outputs", "import_option"]


def echo_json(obj: Any) -> None:
    """`obj` as strict JSON: a non-finite float (parity's inf / NaN against numbers) as the string "inf" /
    "-inf" / "nan", which every JSON reader takes (Python's default writes the invalid bare Infinity / NaN)."""
    click.echo(json.dumps(_finite(obj), indent=2, default=str, allow_nan=False))


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def parse_int_list(value: str, what: str) -> tuple[int, ...]:
    try:
        items = tuple(int(x) for x in value.split(",") if x.strip())
    except ValueError as exc:
        raise click.BadParameter(f"expected comma-separated integers for {what}, got '{value}'") from exc
    if not items or any(i <= 0 for i in items):
        raise click.BadParameter(f"expected positive integers for {what}, got '{value}'")
    return items


def check_outputs(*paths: str | None) -> None:
    """Refuse, before any work, output paths that cannot be created (OutputPathError naming the path)."""
    for p in paths:
        if p:
            check_creatable(p)


def _use_imports(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    if value:
        from ..keras_io.custom import use_imports
        from ..keras_io.unguarded import warning_for

        for spec in use_imports(value):  # typed UserCodeError: one line, exit 2 (the group catches it)
            warning = warning_for(spec)  # a script that trains when imported would do so in every process
            if warning:
                click.echo(warning, err=True)
    return value


def import_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """`--import MODULE_OR_FILE` (repeatable): the user's modules that register custom Keras layers and losses,
    imported before any .keras file is loaded, here and in every child process (= MODELKIT_IMPORTS)."""
    return click.option("--import", "imports", multiple=True, metavar="MODULE_OR_FILE", expose_value=False,
                        callback=_use_imports,
                        help="A module (looked up in the current folder first) or .py file that registers custom "
                             "Keras layers or losses; imported before the model loads, in every process; repeatable. "
                             "Same as MODELKIT_IMPORTS.")(f)
