"""Small helpers shared by CLI commands: JSON output, sizes, tables, input files."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Sequence

import click

from ..errors import InputError


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


def read_inputs(path: str) -> Any:
    """A .npy file (one array) or a .npz file (arrays keyed by input name)."""
    import numpy as np

    p = Path(path)
    try:
        data = np.load(p, allow_pickle=False)  # never unpickle user files
    except (OSError, ValueError) as exc:
        raise InputError(f"{p}: not a readable .npy/.npz file without pickles ({exc})") from exc
    if isinstance(data, np.ndarray):
        return data
    with data:
        return {k: data[k] for k in data.files}


def parse_int_list(value: str, what: str) -> tuple[int, ...]:
    try:
        items = tuple(int(x) for x in value.split(",") if x.strip())
    except ValueError as exc:
        raise click.BadParameter(f"expected comma-separated integers for {what}, got '{value}'") from exc
    if not items or any(i <= 0 for i in items):
        raise click.BadParameter(f"expected positive integers for {what}, got '{value}'")
    return items
