"""Plain-text formatting shared by the CLI, reports and scripts (below the CLI: library code may use it)."""
from __future__ import annotations

from typing import Any, Iterable, Sequence


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


QUIET_ENV = "MODELKIT_QUIET"  # "1": progress lines off, in this process and the children it starts


def progress(message: str) -> None:
    """A progress line on stderr (results go to stdout), unless quiet (`modelkit -q`, MODELKIT_QUIET=1); above
    the progress bar when one is drawn (modelkit._progress)."""
    import os

    if os.environ.get(QUIET_ENV) != "1":
        from ._progress import write

        write(message + "\n")
