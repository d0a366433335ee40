"""`modelkit package ARTIFACT --for {tf-serving,torchserve,triton,kserve,browser} --out DIR`."""
from __future__ import annotations

from pathlib import Path

import click

from ._common import check_outputs, human_size, import_option

TARGETS = ("tf-serving", "torchserve", "triton", "kserve", "browser")


@click.command("package", context_settings={"token_normalize_func": lambda t: t.replace("_", "-")})  # tf_serving
@click.argument("artifact", type=click.Path(exists=True))
@click.option("--for", "--to", "target", required=True, type=click.Choice(TARGETS),
              help="The server to package for (--to, as on convert, says the same).")
@click.option("--out", "-o", "out", required=True, type=click.Path(file_okay=False),
              help="Output folder (built atomically).")
@click.option("--name", default=None, help="Model name (default: from the artifact's file name).")
@click.option("--version", "version", default=1, show_default=True, type=click.IntRange(1), help="Model version.")
@click.option("--max-batch-size", default=32, show_default=True, type=click.IntRange(0),
              help="Triton max_batch_size (0: no batching).")
@click.option("--max-delay-ms", default=2.0, show_default=True, type=click.FloatRange(0),
              help="Triton dynamic_batching queue delay.")
@click.option("--runtime", type=click.Choice(["triton", "tf-serving", "openvino"]), default=None,
              help="KServe: which package the InferenceService serves (default: by format).")
@click.option("--storage-uri", default=None, help="KServe: where the package will be uploaded.")
@click.option("--quantize", type=click.Choice(["dynamic-int8", "int8"]), default=None,
              help="Browser: ship an int8 ONNX model (from a .keras source; accuracy drop recorded).")
@click.option("--verify-in-browser", is_flag=True,
              help="Browser: run the bundle in headless Chromium and record its parity with the source.")
@click.option("--force", is_flag=True, help="Replace an existing output folder.")
@import_option
def command(artifact: str, target: str, out: str, name: str | None, version: int, max_batch_size: int,
            max_delay_ms: float, runtime: str | None, storage_uri: str | None, quantize: str | None,
            verify_in_browser: bool, force: bool) -> None:
    """Package ARTIFACT for an external server.

    \b
      tf-serving  SavedModel -> NAME/VERSION/ + models.config + warm-up requests
      torchserve  TorchScript -> model-store/NAME.mar + hardened config.properties
      triton      ONNX / SavedModel / TorchScript / OpenVINO IR -> NAME/config.pbtxt + NAME/VERSION/model
      kserve      InferenceService YAML + the Triton, TF Serving or OpenVINO Model Server package it serves
      browser     .keras / ONNX -> static folder: model.onnx, onnxruntime-web, modelkit.js, index.html
    \b
    Examples:
      modelkit package cnn.onnx --for triton --out triton_repo
      modelkit package cnn.keras --for browser --out web --verify-in-browser
      modelkit serve-static web        # then open the printed URL
    """
    check_outputs(out)
    if target == "browser":
        _browser(artifact, out, quantize, verify_in_browser, force)
        return
    if quantize or verify_in_browser:
        raise click.UsageError("--quantize and --verify-in-browser apply to --for browser only")
    from ..serving.packagers import package

    options = {"max_batch_size": max_batch_size, "max_delay_ms": max_delay_ms}
    if target == "kserve":
        options.update(runtime=runtime, storage_uri=storage_uri)
    dest = package(artifact, target, out, name=name, version=version, force=force, **options)
    click.echo(f"packaged {artifact} for {target} at {dest}")
    for line in _listing(dest):
        click.echo(f"  {line}")


def _listing(dest: Path) -> list[str]:
    """Every file of the package; a SavedModel's variables/ folder as one line with its file count and size."""
    lines, folders = [], {}
    for p in sorted(dest.rglob("*")):
        if not p.is_file():
            continue
        rel = p.relative_to(dest)
        if "variables" in rel.parts[:-1]:
            folder = Path(*rel.parts[: rel.parts.index("variables") + 1])
            count, size = folders.get(folder, (0, 0))
            if not count:
                lines.append(folder)
            folders[folder] = (count + 1, size + p.stat().st_size)
        else:
            lines.append(rel)
    return [f"{x}/ ({folders[x][0]} files, {human_size(folders[x][1])})" if x in folders else str(x) for x in lines]


def _browser(artifact: str, out: str, quantize: str | None, verify: bool, force: bool) -> None:
    from ..web.bundle import build_bundle

    info = build_bundle(artifact, out, force=force, quantize=quantize)
    click.echo(f"browser bundle for {artifact} at {out} ({info['size_bytes'] / 1e6:.1f} MB; model "
               f"{info['model']['size_bytes'] / 1e3:.0f} KB, quantization {info['model']['quantization'] or 'none'})")
    if info.get("onnx_accuracy"):
        acc = info["onnx_accuracy"]
        click.echo(f"accuracy: {acc}")
    if verify:
        from ..web.verify import verify_bundle

        parity = verify_bundle(out)
        click.echo(f"browser parity OK: max abs {max(parity['max_abs'].values()):.1e} (atol {parity['atol']:.0e}) "
                   f"in headless Chromium on {parity['inputs']}")
