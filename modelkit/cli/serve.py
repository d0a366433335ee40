"""`modelkit serve PATH...`: serve artifacts or model repositories over HTTP (OIP v2 + TF Serving REST)."""
from __future__ import annotations

import logging
import os
import sys

import click

from ._common import import_option


@click.command("serve")
@click.argument("paths", nargs=-1, required=True)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind. Anything but loopback needs --allow-remote.")
@click.option("--port", default=8500, show_default=True, type=click.IntRange(0, 65535),
              help="Port to bind (0: a free port, printed at start).")
@click.option("--allow-remote", is_flag=True, help="Allow binding a non-loopback address (no authentication!).")
@click.option("--max-batch-size", default=32, show_default=True, type=click.IntRange(1),
              help="Rows per engine call after dynamic batching (1 turns batching off).")
@click.option("--max-delay-ms", default=2.0, show_default=True, type=click.FloatRange(0),
              help="How long the first request of a batch waits for more.")
@click.option("--queue-size", default=256, show_default=True, type=click.IntRange(1),
              help="Requests admitted per model version before 503.")
@click.option("--max-body-mb", default=64.0, show_default=True, type=click.FloatRange(0.001),
              help="Request body limit (413 above it, decided from the headers).")
@click.option("--max-buffered-mb", default=None, type=click.FloatRange(0.001),
              help="Budget of request-body bytes held across all connections; a body that would exceed it "
                   "gets 503.  [default: 4 x --max-body-mb]")
@click.option("--body-timeout", default=30.0, show_default=True, type=click.FloatRange(0.001),
              help="Seconds without a byte of a request body before it is answered 408.")
@click.option("--drain-timeout", default=60.0, show_default=True, type=click.FloatRange(0.001),
              help="On SIGTERM, seconds to let running requests finish; past it they are cut off, exit 1.")
@click.option("--poll-interval", default=0.0, show_default=True, type=click.FloatRange(0),
              help="Seconds between scans of repository folders for new versions (0: off).")
@click.option("--keep-versions", default=1, show_default=True, type=click.IntRange(1),
              help="Versions kept loaded per model; older ones are drained and unloaded.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--threads", type=int, default=None, help="Intra-op threads per engine.")
@click.option("--trust-unsafe-code", is_flag=True,
              help="UNSAFE: run code the file carries (Keras Lambda layers, TorchScript / SavedModel file ops, "
                   "TVM libraries not compiled here). Only for files you trust; see docs/reliability.md.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
@import_option
def command(paths: tuple[str, ...], host: str, port: int, allow_remote: bool, max_batch_size: int,
            max_delay_ms: float, queue_size: int, max_body_mb: float, max_buffered_mb: float | None,
            body_timeout: float, drain_timeout: float, poll_interval: float, keep_versions: int,
            device: str, threads: int | None, trust_unsafe_code: bool, log_level: str) -> None:
    """Serve PATHS: artifacts (NAME=PATH to name one) or repository folders laid out NAME/VERSION/artifact.

    \b
    Endpoints (Open Inference Protocol v2, TF Serving REST, Prometheus):
      GET  /v2/health/ready            POST /v2/models/NAME/infer
      GET  /v2/models/NAME             POST /v2/repository/models/NAME/load
      POST /v1/models/NAME:predict     GET  /v1/models/NAME
      GET  /metrics
    \b
    Example:
      modelkit serve cnn.onnx --port 8500
      curl -s localhost:8500/v2/models/cnn
    SIGTERM stops accepting, answers every accepted request, and exits 0 (1 if requests were still
    running after --drain-timeout; they are cut off).
    """
    from ..serving.repository import ServeConfig
    from ..serving.server import ServerOptions, serve

    logging.basicConfig(level=log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    options = ServerOptions(
        sources=list(paths), host=host, port=port, allow_remote=allow_remote, poll_interval=poll_interval,
        max_body_bytes=int(max_body_mb * 1024 * 1024),
        max_buffered_bytes=None if max_buffered_mb is None else int(max_buffered_mb * 1024 * 1024),
        body_timeout=body_timeout, drain_timeout=drain_timeout,
        config=ServeConfig(max_batch_size=max_batch_size, max_delay_ms=max_delay_ms, queue_size=queue_size,
                           device=device, threads=threads, keep_versions=keep_versions,
                           trust_unsafe_code=trust_unsafe_code))
    rc = serve(options)
    if rc != 0:  # the drain timed out: requests are stuck in an engine thread, which interpreter exit would
        logging.shutdown()  # wait for forever; leave now so the exit is bounded
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    sys.exit(rc)
