"""`modelkit package ARTIFACT --for {tf-serving,torchserve,triton,kserve} --out DIR`."""
from __future__ import annotations

import click

TARGETS = ("tf-serving", "torchserve", "triton", "kserve")


@click.command("package")
@click.argument("artifact", type=click.Path(exists=True))
@click.option("--for", "target", required=True, type=click.Choice(TARGETS), help="The server to package for.")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Output folder (built atomically).")
@click.option("--name", default=None, help="Model name (default: from the artifact's file name).")
@click.option("--version", "version", default=1, show_default=True, type=click.IntRange(1), help="Model version.")
@click.option("--max-batch-size", default=32, show_default=True, type=click.IntRange(0),
              help="Triton max_batch_size (0: no batching).")
@click.option("--max-delay-ms", default=2.0, show_default=True, type=click.FloatRange(0),
              help="Triton dynamic_batching queue delay.")
@click.option("--runtime", type=click.Choice(["triton", "tf-serving"]), default=None,
              help="KServe: which package the InferenceService serves (default: by format).")
@click.option("--storage-uri", default=None, help="KServe: where the package will be uploaded.")
@click.option("--force", is_flag=True, help="Replace an existing output folder.")
def command(artifact: str, target: str, out: str, name: str | None, version: int, max_batch_size: int,
            max_delay_ms: float, runtime: str | None, storage_uri: str | None, force: bool) -> None:
    """Package ARTIFACT for an external server.

    \b
      tf-serving  SavedModel -> NAME/VERSION/ + models.config + warm-up requests
      torchserve  TorchScript -> model-store/NAME.mar + hardened config.properties
      triton      ONNX / SavedModel / TorchScript -> NAME/config.pbtxt + NAME/VERSION/model
      kserve      InferenceService YAML + the Triton or TF Serving package it serves
    \b
    Example:
      modelkit package cnn.onnx --for triton --out triton_repo
    """
    from ..serving.packagers import package

    options = {"max_batch_size": max_batch_size, "max_delay_ms": max_delay_ms}
    if target == "kserve":
        options.update(runtime=runtime, storage_uri=storage_uri)
    dest = package(artifact, target, out, name=name, version=version, force=force, **options)
    click.echo(f"packaged {artifact} for {target} at {dest}")
    for p in sorted(dest.rglob("*")):
        if p.is_file() and "variables" not in p.parts:
            click.echo(f"  {p.relative_to(dest)}")
