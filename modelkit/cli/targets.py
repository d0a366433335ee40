"""`modelkit targets`: the named compilation targets, what each means for TVM, and what fits it."""
from __future__ import annotations

import json

import click

from ._common import echo_json, table


@click.command("targets")
@click.option("--json", "as_json", is_flag=True, help="Print the targets as JSON.")
def command(as_json: bool) -> None:
    """List the targets `modelkit compile --target` accepts (or pass a TVM target dict as JSON).

    server-cpu is detected from this machine (/proc/cpuinfo): the line below the table says what was found.
    """
    import shutil

    from ..targets.registry import targets

    all_targets = targets()
    if as_json:
        echo_json([t.to_dict() for t in all_targets.values()])
        return
    rows = []
    for t in all_targets.values():
        tool = t.cross_compiler or ("nvcc" if t.device == "cuda" else "host")
        ready = "yes" if tool == "host" or shutil.which(tool) else f"no ({tool} missing)"
        rows.append([t.name, f"{t.arch}/{t.device}", json.dumps(t.tvm, separators=(",", ":")),
                     ", ".join(t.formats), ready])
    click.echo(table(["target", "runs on", "TVM target", "formats", "can compile here"], rows))
    cpu = all_targets["server-cpu"].detected
    click.echo(f"\nserver-cpu detected from {cpu['source']}: {cpu['model'] or 'unknown model'}, {cpu['cores']} "
               f"cores, SIMD {' '.join(cpu['flags']) or 'none'} -> llvm -mcpu={cpu['mcpu']}")
    for t in all_targets.values():
        click.echo(f"  {t.name}: {t.description}" + (f" ({t.notes})" if t.notes else ""))
