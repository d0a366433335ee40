"""Outputs of `modelkit optimize`: the terminal table and a self-contained HTML report.

`result` is {"model", "model_sha256", "target", "batch", "limits", "candidates": [...], "decision": {...},
"budget_s", "spent_s", "machine": {...}}; the decision may lack a winner (none met the limits: then it holds
"error"). The HTML embeds its plots as base64 PNGs (matplotlib's Agg backend, imported only here) and is
written atomically: a plot that fails to render leaves no file behind.
"""
from __future__ import annotations

import html
import os
import re
from pathlib import Path
from typing import Any

from .. import _atomic
from .decide import MB, STATISTIC, describe_limits, full_limits, is_baseline, mb_text, measured_candidates, ms_text

HEADERS = ["", "candidate", "format", "precision", "threads", "p50 ms", "± ms", "p99 ms", "acc drop", "size MB",
           "status"]
NOTE = ("* the winner, ^ on the Pareto front (p50, accuracy drop, size).  p50: median of per-round medians, "
        "± half the width of its 95 % interval.  Sizes in MB of 2**20 bytes.")


def _f(v: Any, spec: str) -> str:
    return "-" if v is None else f"{v:{spec}}"


def _ms(v: float | None) -> str:
    return "-" if v is None else ms_text(v)


def _half_width(c: dict[str, Any]) -> float | None:
    ci = c.get("ci95_ms")
    return None if not ci else (float(ci[1]) - float(ci[0])) / 2


def _cut(text: str, width: int) -> str:
    """`text` cut at a word to at most `width` characters, with '...' when cut; absolute paths first shortened
    to their file names (a failed build's reason starts with its artifact's path in the cache)."""
    text = re.sub(r"(?<![\w.])/(?:[^\s/]+/)+([^\s/]+)", r"\1", text)
    if len(text) <= width:
        return text
    head = text[: width - 3].rsplit(" ", 1)[0] if " " in text[: width - 3] else text[: width - 3]
    return head.rstrip(" ,;:") + "..."


def status_of(c: dict[str, Any], decision: dict[str, Any]) -> str:
    """A candidate's line in the status column: winner, baseline, the limits it missed, or why not measured."""
    if c.get("key") == decision.get("winner"):
        return "winner"
    if is_baseline(c):
        return "baseline (Keras predict, never chosen)"
    missed = (decision.get("rejected") or {}).get(c.get("key"))
    if missed:
        return "; ".join(missed)
    if c.get("status") == "measured":
        return "meets the limits"
    return (c.get("status") or "not measured") + (f": {c['reason']}" if c.get("reason") else "")


def table_rows(result: dict[str, Any], width: int | None = None) -> tuple[list[str], list[list[str]]]:
    """Headers and cells, one row per candidate (status cut to `width` characters when given)."""
    decision = result.get("decision") or {}
    front = set(decision.get("front") or [])
    rows = []
    for c in result["candidates"]:
        mark = ("*" if c.get("key") == decision.get("winner") else "") + ("^" if c.get("key") in front else "")
        status = status_of(c, decision)
        size = c.get("size_bytes")
        rows.append([
            mark, str(c.get("key")), str(c.get("format") or "-"),
            "fp32" if c.get("quantize") is None else str(c["quantize"]), _f(c.get("threads"), "d"),
            _ms(c.get("p50_ms")), _f(_half_width(c), ".2g"), _ms(c.get("p99_ms")),
            _f(c.get("accuracy_drop"), ".4f"), "-" if size is None else mb_text(size / MB),
            _cut(status, width) if width else status,
        ])
    return HEADERS, rows


def _decision_line(result: dict[str, Any]) -> str:
    decision = result.get("decision") or {}
    if decision.get("winner"):
        return str(decision.get("why") or f"winner: {decision['winner']}")
    return "no winner: " + str(decision.get("error") or "no candidate meets the limits")


def text_table(result: dict[str, Any]) -> str:
    """The terminal table, then the limits, the statistic and the decision."""
    from .._text import table

    headers, rows = table_rows(result, width=70)
    return "\n".join([table(headers, rows), NOTE, f"limits: {describe_limits(result.get('limits'))}",
                      _decision_line(result)])


def pareto_plot(result: dict[str, Any]) -> str:
    """Base64 PNG: p50 vs accuracy drop, marker area by size, the front as a line, the winner starred."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    from ..bench.plots import png_base64

    decision = result.get("decision") or {}
    rejected, front = decision.get("rejected") or {}, decision.get("front") or []
    measured = measured_candidates(result["candidates"])
    biggest = max([c.get("size_bytes") or 0 for c in measured] + [1])
    fig, ax = plt.subplots(figsize=(8, 5))
    for c in measured:
        x, y = c["p50_ms"], c.get("accuracy_drop") or 0.0
        area = 30 + 500 * (c.get("size_bytes") or 0) / biggest
        if is_baseline(c):
            style = {"color": "tab:gray", "marker": "s"}
        elif c["key"] in rejected:
            style = {"facecolors": "none", "edgecolors": "tab:red"}
        else:
            style = {"color": "tab:blue", "alpha": 0.7}
        ax.scatter([x], [y], s=area, **style)
        if c["key"] in front or is_baseline(c) or len(measured) <= 8:  # more names overprint: the table has them
            ax.annotate(c["key"], (x, y), fontsize=7, xytext=(4, 4), textcoords="offset points")
    pts = sorted((c["p50_ms"], c.get("accuracy_drop") or 0.0) for c in measured if c["key"] in front)
    if pts:
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "--", color="tab:green", label="Pareto front")
    win = next((c for c in measured if c["key"] == decision.get("winner")), None)
    if win is not None:
        ax.scatter([win["p50_ms"]], [win.get("accuracy_drop") or 0.0], marker="*", s=300, color="gold",
                   edgecolors="black", zorder=5, label=f"winner: {win['key']}")
    max_drop = full_limits(result.get("limits"))["max_accuracy_drop"]
    if max_drop is not None:
        ax.axhline(max_drop, color="tab:red", linestyle=":", label=f"max accuracy drop {max_drop:g}")
    ax.set_xscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(plain)
    ax.set_xlabel(f"p50 latency, ms (log), batch {result.get('batch')}")
    ax.set_ylabel("accuracy drop vs Keras")
    ax.set_title("Latency vs accuracy drop (marker area: size; hollow red: misses a limit; grey: Keras)")
    ax.legend(fontsize=8, loc="best")
    return png_base64(fig)


def p50_plot(result: dict[str, Any]) -> str:
    """Base64 PNG: one horizontal bar per measured candidate, its p50 with the 95 % interval as error bars."""
    import matplotlib.pyplot as plt

    from ..bench.plots import png_base64

    decision = result.get("decision") or {}
    rows = sorted(measured_candidates(result["candidates"]), key=lambda c: c["p50_ms"])
    p50 = [c["p50_ms"] for c in rows]
    ci = [c.get("ci95_ms") or [c["p50_ms"], c["p50_ms"]] for c in rows]
    err = [[max(0.0, p - lo) for p, (lo, _) in zip(p50, ci)], [max(0.0, hi - p) for p, (_, hi) in zip(p50, ci)]]
    colours = ["gold" if c["key"] == decision.get("winner") else "tab:gray" if is_baseline(c)
               else "tab:red" if c["key"] in (decision.get("rejected") or {}) else "tab:blue" for c in rows]
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(rows) + 1.6))
    ax.barh([c["key"] for c in rows], p50, xerr=err, capsize=3, color=colours, edgecolor="black", linewidth=0.5)
    ax.invert_yaxis()
    if max(p50) > 20 * min(p50):  # a Keras row or a slow engine would flatten the fast ones to nothing
        ax.set_xscale("log")
    ax.set_xlabel("p50 latency, ms (whiskers: 95 % interval)" + (", log scale" if ax.get_xscale() == "log" else ""))
    ax.set_title("p50 per candidate (gold: winner; red: misses a limit; grey: Keras)")
    return png_base64(fig)


def render_plots(result: dict[str, Any]) -> list[tuple[str, str]]:
    """(caption, base64 PNG) of the Pareto plot and the p50 bar chart; [] when nothing was measured."""
    import matplotlib

    matplotlib.use("Agg")
    if not measured_candidates(result["candidates"]):
        return []
    return [("Pareto front: p50 latency vs accuracy drop, marker area by size", pareto_plot(result)),
            ("p50 latency per candidate with its 95 % interval", p50_plot(result))]


def write_html(result: dict[str, Any], path: str | os.PathLike) -> Path:
    """One self-contained HTML file: the decision and its why, the limits, the plots and the table."""
    esc = html.escape
    headers, rows = table_rows(result)
    decision = result.get("decision") or {}
    thead = "".join(f"<th>{esc(h)}</th>" for h in headers)
    tbody = "".join(
        f'<tr{" class=win" if row[1] == decision.get("winner") else ""}>'
        + "".join(f"<td>{esc(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    figs = "".join(f'<figure><img alt="{esc(title)}" src="data:image/png;base64,{b64}"/>'
                   f"<figcaption>{esc(title)}</figcaption></figure>" for title, b64 in render_plots(result))
    m = result.get("machine") or {}
    budget = result.get("budget_s")
    spent = result.get("spent_s")
    time_line = (f"{spent:.0f} s spent" if spent is not None else "") + (f" of a {budget:.0f} s budget"
                                                                        if budget is not None else "")
    doc = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>modelkit optimize: {esc(str(result.get('model')))}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1400px}}table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}}td:nth-child(2),td:last-child{{text-align:left}}
tr.win{{background:#fff3b0;font-weight:bold}}figure{{display:inline-block;margin:1em}}img{{max-width:900px}}
.why{{font-size:15px;background:#f4f4f4;padding:.6em}}</style></head><body>
<h1>modelkit optimize: {esc(str(result.get('model')))}</h1>
<p>Model sha256 <code>{esc(str(result.get('model_sha256')))}</code>; target {esc(str(result.get('target')))};
batch {esc(str(result.get('batch')))}; {esc(time_line)}. Machine: {esc(str(m.get('cpu', '?')))},
{esc(str(m.get('logical_cpus', '?')))} CPUs.</p>
<p>Limits: {esc(describe_limits(result.get('limits')))}. Statistic: {esc(decision.get('statistic') or STATISTIC)}
(the winner is the lowest among the candidates meeting every limit; an exact candidate whose 95 % interval
overlaps the fastest's is preferred).</p>
<p class="why"><b>Decision:</b> {esc(_decision_line(result))}</p>
{figs}
<p>{esc(NOTE)}</p>
<table><thead><tr>{thead}</tr></thead><tbody>{tbody}</tbody></table>
</body></html>
"""
    dest = Path(path)
    _atomic.write_text(dest, doc)
    return dest
