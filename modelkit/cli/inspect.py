"""`modelkit inspect ARTIFACT`: what is this file, and what does it expect?"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import click

from ._common import echo_json, human_size, import_option


def describe(path: str, trust_unsafe_code: bool = False) -> dict[str, Any]:
    """Format, size, signature and manifest of an artifact; ONNX graphs also get op counts."""
    from .. import manifest as _manifest
    from ..formats import Format, detect

    fmt = detect(path)
    m = _manifest.read(path)
    info: dict[str, Any] = {"path": str(path), "format": fmt.value, "size_bytes": _manifest.size_of(path)}
    if m is not None:
        info["signature"] = m.signature
        info["manifest"] = {k: v for k, v in m.__dict__.items() if k != "signature"}
    else:
        from ..runtime import load

        info["signature"] = load(path, trust_unsafe_code=trust_unsafe_code).signature.to_dict()
        info["manifest"] = None
    if fmt == Format.ONNX:
        info["onnx"] = onnx_summary(Path(path))
    return info


def onnx_summary(path: Path) -> dict[str, Any] | None:
    """IR, opsets and op counts; None where the onnx package is absent (a runtime-only install, run-onnx)."""
    import importlib.util

    from ..errors import LoadError
    from ..safety import check_onnx_external_data

    check_onnx_external_data(path)
    if importlib.util.find_spec("onnx") is None:
        return None
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except (ValueError, OSError) as exc:
        raise LoadError(f"{path}: unreadable ONNX model ({exc})") from exc
    ops = Counter(n.op_type for n in model.graph.node)
    return {"ir_version": model.ir_version, "producer": f"{model.producer_name} {model.producer_version}".strip(),
            "opsets": {o.domain or "ai.onnx": o.version for o in model.opset_import},
            "nodes": len(model.graph.node), "initializers": len(model.graph.initializer),
            "ops": dict(ops.most_common())}


@click.command("inspect")
@click.argument("artifact", type=click.Path(exists=True))
@click.option("--trust-unsafe-code", is_flag=True,
              help="UNSAFE: run code the file carries (Keras Lambda layers, TorchScript / SavedModel file ops, "
                   "TVM libraries not compiled here). Only for files you trust; see docs/reliability.md.")
@click.option("--json", "as_json", is_flag=True, help="Print everything as JSON.")
@import_option
def command(artifact: str, trust_unsafe_code: bool, as_json: bool) -> None:
    """Show ARTIFACT's format, size, signature, manifest (chain of converters, parity) and, for ONNX,
    opset and op counts.

    \b
    Example:
      modelkit inspect cnn.onnx
    """
    from ..spec import Signature

    info = describe(artifact, trust_unsafe_code)
    if as_json:
        echo_json(info)
        return
    click.echo(f"{info['path']}: {info['format']}, {human_size(info['size_bytes'])}")
    click.echo(Signature.from_dict(info["signature"]).describe())
    m = info["manifest"]
    if m:
        src = m.get("source") or {}
        if src:
            click.echo(f"source: {src.get('path')} ({src.get('format')}, sha256 {str(src.get('sha256'))[:12]}…)")
        for e in m.get("chain") or []:
            versions = ", ".join(f"{k} {v}" for k, v in (e.get("versions") or {}).items())
            click.echo(f"  {e['source']} -> {e['target']} by {e['converter']} ({versions})")
        planned = ((m.get("chain") or [{}])[-1].get("options") or {}).get("max_batch")
        if info["format"] == "executorch" and planned:  # the signature says '?' for the batch: how far it goes
            click.echo(f"batch: 1..{planned} planned in the program (--max-batch); a larger one runs in slices")
            for name, axes in ((m.get("extra") or {}).get("dynamic_dims") or {}).items():
                for axis, entry in axes.items():
                    accepts = entry.get("accepts") if axis != "0" else None
                    if accepts:
                        click.echo(f"input '{name}' dimension {axis}: {accepts[0]}..{accepts[1]} planned in the "
                                   "program (--max-length)")
            for group in (m.get("extra") or {}).get("tied_dims") or []:
                dims = " = ".join(f"'{k.rpartition(':')[0]}' dimension {k.rpartition(':')[2]}" for k in group)
                click.echo(f"one size: {dims} (the model computes them together; other inputs are refused)")
            planned_bytes = (m.get("extra") or {}).get("planned_memory_bytes")
            if planned_bytes:
                click.echo(f"memory: {planned_bytes / 2**20:.1f} MiB planned for the largest sizes, allocated at load")
        for key, entry in ((m.get("extra") or {}).get("size_limits") or {}).items():
            name, _, axis = key.rpartition(":")
            click.echo(f"input '{name}' dimension {axis}: at most {entry.get('max')} ({entry.get('why')})")
        parity = m.get("parity")
        accuracy = (m.get("extra") or {}).get("accuracy")
        if m.get("quantization") and m["quantization"] != "none":
            click.echo(f"quantization: {m['quantization']}")
        if accuracy:  # a lossy hop is judged by its accuracy, not by the parity atol
            from ..converters.gate_verdict import summary

            click.echo(summary(accuracy))
        elif parity:
            worst = max((o["max_abs"] for o in parity["outputs"]), default=0.0)
            click.echo(f"parity: {'ok' if parity['ok'] else 'FAILED'}, max abs error {worst:.2e} "
                       f"(atol {parity['tolerance']['atol']:.0e}) on {parity['inputs']}")
        if m.get("training"):
            t = m["training"]
            click.echo(f"trained: {t.get('model')} on {t.get('data')} with {t.get('backend')}, "
                       f"test accuracy {t.get('test_accuracy')}")
        click.echo(f"created: {m.get('created')}")
    else:
        click.echo("manifest: none (not made by modelkit)")
    if "onnx" in info and info["onnx"] is None:
        click.echo("onnx: opsets and op counts need the onnx package: pip install 'modelkit[onnx]'")
    elif "onnx" in info:
        o = info["onnx"]
        click.echo(f"onnx: IR {o['ir_version']}, opsets {o['opsets']}, {o['nodes']} nodes, producer {o['producer']}")
        click.echo("ops: " + ", ".join(f"{k}×{v}" for k, v in o["ops"].items()))
