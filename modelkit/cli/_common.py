"""Small helpers shared by CLI commands: JSON output, option parsing, output checks; sizes and tables
(modelkit._text) and input files (modelkit.input_files) re-exported."""
from __future__ import annotations

import json
from typing import Any

import click

from .._atomic import check_creatable
from .._text import human_size, table
from ..input_files import read_inputs

__all__ = ["echo_json", "human_size", "table", "read_inputs", "parse_int_list", "check_outputs"]


def echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, default=str))


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
