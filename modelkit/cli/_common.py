"""Small helpers shared by CLI commands: JSON output, sizes, tables, input files (._inputs)."""
from __future__ import annotations

import json
from typing import Any, Iterable, Sequence

import click

from .._atomic import check_creatable
from ._inputs import read_inputs

__all__ = ["echo_json", "human_size", "table", "read_inputs", "parse_int_list", "check_outputs"]


def echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, default=str))


def human_size(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A plain aligned text table."""
    rows = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    sep = "  ".join("-" * w for w in widths)
    body = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join([line, sep, *body])


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
