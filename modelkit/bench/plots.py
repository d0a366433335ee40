"""Plots of a benchmark result, rendered with matplotlib's Agg backend to base64 PNGs."""
from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any


def _ok_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in result["rows"] if not r.get("error") and r.get("latency_ms")]


def _names(rows: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(r["name"] for r in rows))


def png_base64(fig: Any) -> str:
    """A matplotlib figure as a base64 PNG (for an <img src="data:...">), the figure then closed."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _model_of(r: dict[str, Any]) -> str:
    return Path(r["source"] or r["artifact"]).name


def _grouped(rows: list[dict[str, Any]], value: Any, title: str, ylabel: str, log: bool = False,
             err: Any = None) -> str:
    """One panel per model; in each, bars per engine grouped by batch size (an engine keeps its colour)."""
    import matplotlib.pyplot as plt

    engines = list(dict.fromkeys(r["engine"] for r in rows))
    colours = {e: plt.get_cmap("tab10" if len(engines) <= 10 else "tab20")(i) for i, e in enumerate(engines)}
    models = list(dict.fromkeys(_model_of(r) for r in rows))
    batches = sorted({r["batch"] for r in rows})
    fig, axes = plt.subplots(len(models), 1, figsize=(9, 3.2 * len(models)), squeeze=False)
    for ax, model in zip(axes[:, 0], models):
        mine = [r for r in rows if _model_of(r) == model]
        names = _names(mine)
        width = 0.8 / max(1, len(names))
        for i, name in enumerate(names):
            by_b = {r["batch"]: r for r in mine if r["name"] == name}
            xs = [j + i * width for j, b in enumerate(batches) if b in by_b]
            ys = [value(by_b[b]) for b in batches if b in by_b]
            yerr = None
            if err is not None:
                yerr = [[0 for _ in ys], [max(0.0, err(by_b[b]) - value(by_b[b])) for b in batches if b in by_b]]
            first = next(iter(by_b.values()))
            engine = first["engine"]
            ax.bar(xs, ys, width, label=f"{engine} ({first['format']})", yerr=yerr, capsize=2, color=colours[engine])
        ax.set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(batches))])
        ax.set_xticklabels([f"batch {b}" for b in batches])
        ax.set_ylabel(ylabel)
        ax.set_title(f"{title}: {model}")
        if log:
            ax.set_yscale("log")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return png_base64(fig)


def _per_artifact(rows: list[dict[str, Any]], value: Any, title: str, xlabel: str) -> str:
    """One horizontal bar per artifact (the largest value over its batch sizes)."""
    import matplotlib.pyplot as plt

    names = _names(rows)
    vals = [max(value(r) or 0 for r in rows if r["name"] == n) for n in names]
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(names) + 1.5))
    ax.barh(names, vals, color="tab:gray")
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.invert_yaxis()
    return png_base64(fig)


def render_all(result: dict[str, Any]) -> list[tuple[str, str]]:
    """(title, base64 PNG) for latency, throughput, memory, size and fraction of peak."""
    import matplotlib

    matplotlib.use("Agg")
    rows = _ok_rows(result)
    if not rows:
        return []
    figs = [
        ("Latency p50 by engine and batch (whisker: p99), ms, log scale",
         _grouped(rows, lambda r: r["latency_ms"]["p50"], "latency p50 (ms)", "ms", log=True,
                  err=lambda r: r["latency_ms"]["p99"])),
        ("Throughput, samples/s", _grouped(rows, lambda r: r["throughput_sps"], "throughput", "samples/s", log=True)),
        ("Peak memory (RSS of the engine's process), MB",
         _per_artifact(rows, lambda r: (r["peak_rss_bytes"] or 0) / 2**20, "peak RSS", "MB")),
        ("Artifact size on disk, MB", _per_artifact(rows, lambda r: r["size_bytes"] / 2**20, "artifact size", "MB")),
    ]
    if any(r.get("fraction_of_peak") for r in rows):
        peak = result["machine"].get("peak_gflops")
        figs.append((f"Achieved GFLOP/s at p50 as % of the estimated peak ({peak:.0f} GFLOP/s)",
                     _grouped(rows, lambda r: 100 * (r.get("fraction_of_peak") or 0), "fraction of peak",
                              "% of peak fp32")))
    return figs
