"""Outputs of a benchmark result: terminal table, CSV, and a self-contained HTML report with plots."""
from __future__ import annotations

import csv
import html
import io
import os
from pathlib import Path
from typing import Any

from .. import _atomic
from .._text import human_size

CSV_FIELDS = (
    "name", "artifact", "format", "engine", "kind", "mode", "batch", "device", "threads", "size_bytes",
    "load_s", "first_call_s", "iterations", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "iqr_ms",
    "min_ms", "max_ms", "throughput_sps", "peak_rss_bytes", "flops", "gflops_per_s", "fraction_of_peak",
    "speedup_vs_predict", "speedup_vs_direct", "inputs", "source", "error",
)


def _fmt(v: Any, spec: str = ".3g", suffix: str = "") -> str:
    return "-" if v is None else f"{v:{spec}}{suffix}"


def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:.1f}"


def _speedup(v: float | None) -> str:
    """A speed-up as the README's tables write it: 1419x, 7.3x, 0.41x."""
    return "-" if v is None else f"{v:.0f}x" if v >= 100 else f"{v:.2g}x" if v < 10 else f"{v:.1f}x"


def table_rows(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Headers and cells of the terminal table (also used by the HTML report)."""
    headers = ["artifact", "engine", "batch", "load s", "first ms", "p50 ms", "p90 ms", "p99 ms", "iqr ms",
               "samples/s", "peak MB", "size", "GFLOP/s", "% peak", "vs predict", "vs direct"]
    rows = []
    for r in result["rows"]:
        lat = r["latency_ms"] or {}
        if r.get("error"):
            rows.append([r["name"], r["engine"], str(r["batch"]), "FAILED: " + r["error"][:60]] + [""] * 12)
            continue
        frac = r.get("fraction_of_peak")
        rows.append([
            r["name"] + (" *" if r["kind"] == "baseline" else ""), r["engine"], str(r["batch"]),
            _fmt(r["load_s"], ".2f"), _fmt((r["first_call_s"] or 0) * 1e3, ".3g"), _fmt(lat.get("p50")),
            _fmt(lat.get("p90")), _fmt(lat.get("p99")), _fmt(lat.get("iqr"), ".2g"),
            _fmt(r["throughput_sps"], ".4g"), _mb(r["peak_rss_bytes"]), human_size(r["size_bytes"]),
            _fmt(r.get("gflops_per_s"), ".3g"), "-" if frac is None else f"{100 * frac:.2g}%",
            _speedup(r.get("speedup_vs_predict")), _speedup(r.get("speedup_vs_direct")),
        ])
    return headers, rows


def text_table(result: dict[str, Any]) -> str:
    """The terminal table, with a footnote on the baselines and the peak estimate."""
    from .._text import table

    headers, rows = table_rows(result)
    m = result["machine"]
    peak = m.get("peak_gflops")
    notes = ["* Keras baseline.  vs predict / vs direct: speed-up over Keras model.predict / model(x) at the same "
             "batch (their p50 latency over this row's; > 1 is faster)."]
    if peak:
        notes.append(f"peak {peak:.0f} GFLOP/s = {m['physical_cores']} cores x {m['clock_mhz'] / 1e3:.2f} GHz x "
                     f"{m['flops_per_cycle']} FLOPs/cycle ({m['simd']}); {m['cpu']}")
    return table(headers, rows) + "\n" + "\n".join(notes)


def csv_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for r in result["rows"]:
        lat = r["latency_ms"] or {}
        flat = {k: r.get(k) for k in CSV_FIELDS}
        flat.update({f"{k}_ms": lat.get(k) for k in ("p50", "p90", "p99", "mean", "std", "iqr", "min", "max")})
        out.append(flat)
    return out


def write_csv(result: dict[str, Any], path: str | os.PathLike) -> Path:
    """One row per artifact (and baseline) x batch size, columns CSV_FIELDS."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(CSV_FIELDS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(csv_rows(result))
    dest = Path(path)
    _atomic.write_text(dest, buf.getvalue())
    return dest


def write_html(result: dict[str, Any], path: str | os.PathLike) -> Path:
    """One self-contained HTML file: machine, settings, the table, and PNG plots embedded as base64."""
    from .plots import render_all

    headers, rows = table_rows(result)
    m, s = result["machine"], result["settings"]
    esc = html.escape
    thead = "".join(f"<th>{esc(h)}</th>" for h in headers)
    tbody = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    figs = "".join(f'<figure><img alt="{esc(title)}" src="data:image/png;base64,{b64}"/>'
                   f"<figcaption>{esc(title)}</figcaption></figure>" for title, b64 in render_all(result))
    peak = m.get("peak_gflops")
    peak_line = "unknown"
    if peak:
        peak_line = (f"{peak:.0f} GFLOP/s = {m['physical_cores']} cores &times; {m['clock_mhz'] / 1e3:.2f} GHz "
                     f"&times; {m['flops_per_cycle']} FLOPs/cycle ({esc(m['simd'])}, {esc(m['peak_source'])})")
    run = (f"{s['iterations']} iterations" if s.get("iterations") else f"{s['duration_s']:g} s") + " per batch size"
    doc = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>modelkit bench</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1400px}}table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}}td:first-child,td:nth-child(2){{text-align:left}}
figure{{display:inline-block;margin:1em}}img{{max-width:900px}}</style></head><body>
<h1>modelkit bench</h1>
<p>{esc(m['cpu'])}; {m['logical_cpus']} CPUs; peak fp32 {peak_line}. Created {esc(result['created'])}.</p>
<p>Batches {esc(str(s['batches']))}, threads {esc(str(s['threads'] or 'engine default'))}, device {esc(s['device'])},
warmup {s['warmup']}, {esc(run)}. Every artifact ran in its own child process.
Rows marked * are the Keras baselines; "vs" columns are speed-ups: the baseline's p50 latency over the
row's at the same batch (&gt; 1 is faster).</p>
<table><thead><tr>{thead}</tr></thead><tbody>{tbody}</tbody></table>
{figs}
</body></html>
"""
    dest = Path(path)
    _atomic.write_text(dest, doc)
    return dest
