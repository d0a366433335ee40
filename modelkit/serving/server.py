"""`modelkit serve`: the built-in server (Open Inference Protocol v2 + TF Serving REST + /metrics).

Lifecycle: bind (loopback unless allowed), print the address, load and warm every model in the
background (ready stays false until then), poll repositories for new versions, and on SIGTERM or
SIGINT stop accepting, flush the batch queues, answer every accepted request, and return 0.
"""
from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from .. import errors as _errors
from . import protocol_v2, tf_serving
from .errors import BadRequest, BindError, MethodNotAllowed, ModelNotFound, ServingError, status_of
from .http import BODY_TIMEOUT_S, HTTPServer, Request, Response, error_response
from .metrics import Metrics
from .repository import Repository, ServeConfig

log = logging.getLogger("modelkit.serving")
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


@dataclass
class ServerOptions:
    sources: list[str]
    host: str = "127.0.0.1"
    port: int = 8500
    allow_remote: bool = False
    config: ServeConfig = field(default_factory=ServeConfig)
    poll_interval: float = 0.0
    max_body_bytes: int = 64 * 1024 * 1024
    max_buffered_bytes: int | None = None  # request-body bytes held across connections; None: 4 x max body
    body_timeout: float = BODY_TIMEOUT_S  # seconds without a byte of a request body: 408
    drain_timeout: float = 60.0


def check_options(options: ServerOptions) -> None:
    """Refuse limits that cannot work together (one-line typed errors, before anything binds)."""
    if options.max_buffered_bytes is not None and options.max_buffered_bytes < options.max_body_bytes:
        raise _errors.ModelkitError(f"the request-body budget ({options.max_buffered_bytes} bytes, "
                                    f"--max-buffered-mb) is smaller than the body limit "
                                    f"({options.max_body_bytes} bytes, --max-body-mb); raise it")
    if options.body_timeout <= 0 or options.drain_timeout <= 0:
        raise _errors.ModelkitError("--body-timeout and --drain-timeout must be positive")


def check_host(host: str, allow_remote: bool) -> None:
    """Anything other than a loopback address needs allow_remote (the server has no authentication)."""
    if host in LOOPBACK_NAMES:
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    if not allow_remote:
        raise _errors.ModelkitError(f"refusing to bind {host}: the server has no authentication; bind "
                                    "127.0.0.1 (default) or pass --allow-remote to expose it on purpose")


class Server:
    def __init__(self, options: ServerOptions):
        check_host(options.host, options.allow_remote)
        check_options(options)
        self.options = options
        self.metrics = Metrics()
        self.repo = Repository(options.config, self.metrics)
        for s in options.sources:
            self.repo.add_source(s)
        self.loaded = False
        self.http: HTTPServer | None = None
        self.metrics.add_gauge("modelkit_queue_depth", "Requests admitted and not yet answered, per model.",
                               ("model",), self.repo.queue_depths)
        self.metrics.add_gauge("modelkit_in_flight_requests", "HTTP requests being handled.", (),
                               lambda: {(): float(self.http.in_flight if self.http else 0)})
        self.metrics.add_gauge("modelkit_ready", "1 when every model has a warmed version.", (),
                               lambda: {(): float(self.ready())})
        self._routes = [(m, p, getattr(protocol_v2, f), "v2") for m, p, f in protocol_v2.ROUTES]
        self._routes += [(m, p, getattr(tf_serving, f), "tfs") for m, p, f in tf_serving.ROUTES]

    def ready(self) -> bool:
        return self.loaded and not (self.http and self.http.draining) and self.repo.ready()

    async def handle(self, req: Request) -> Response:
        if req.path == "/metrics" and req.method == "GET":
            return Response(200, self.metrics.render().encode(), "text/plain; version=0.0.4")
        start = time.perf_counter()
        func, params, protocol = self._route(req)
        inference = func in (protocol_v2.infer, tf_serving.predict)
        try:
            resp = await func(self, req, **params)
        except (ServingError, _errors.InputError, _errors.ResourceError) as exc:
            resp = error_response(status_of(exc), str(exc))
        except Exception as exc:  # noqa: BLE001 - top-level request handler: an engine failure becomes a
            # 500 JSON error for this request; logged with its traceback, never hidden.
            log.error("%s %s failed: %s", req.method, req.path, exc, exc_info=True)
            resp = error_response(500, f"internal error: {type(exc).__name__}: {exc}")
        if inference:
            model = params.get("name", "?") if params.get("name") in self.repo.entries else "?"
            self.metrics.requests.inc(model, protocol, resp.status)
            self.metrics.latency.observe(time.perf_counter() - start, model, protocol)
        return resp

    def _route(self, req: Request) -> tuple[Any, dict[str, Any], str]:
        allowed = []
        for method, pattern, func, protocol in self._routes:
            m = pattern.fullmatch(req.path)
            if m:
                if method == req.method:
                    return func, m.groupdict(), protocol
                allowed.append(method)
        if allowed:
            raise MethodNotAllowed(f"{req.method} not allowed on {req.path}; use {', '.join(sorted(set(allowed)))}")
        raise ModelNotFound(f"no such endpoint: {req.method} {req.path}")

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        o = self.options
        self.http = HTTPServer(self._handle_safely, o.host, o.port, o.max_body_bytes, o.body_timeout,
                               o.max_buffered_bytes)
        try:
            port = await self.http.start()
        except OSError as exc:
            raise BindError(bind_message(o.host, o.port, exc)) from exc
        print(f"modelkit serve: listening on http://{_url_host(o.host)}:{port}", flush=True)
        loader = loop.create_task(self._load())
        await stop.wait()
        log.info("shutting down: no new connections, draining %d requests", self.http.in_flight)
        for e in self.repo.entries.values():
            for v in e.versions.values():
                v.batcher.flush()
        try:
            await self.http.drain(o.drain_timeout)
        except TimeoutError:
            log.error("drain timed out after %g s: %d requests were still running and were cut off",
                      o.drain_timeout, self.http.in_flight)
            print("modelkit serve: stopped (drain timed out)", flush=True)
            return 1
        finally:
            loader.cancel()
        await self.repo.close()
        print("modelkit serve: stopped", flush=True)
        return 0

    async def _handle_safely(self, req: Request) -> Response:
        try:
            return await self.handle(req)
        except (ServingError, BadRequest) as exc:
            return error_response(exc.status, str(exc))

    async def _load(self) -> None:
        await self.repo.load_all()
        self.loaded = True
        log.info("ready: %s", ", ".join(f"{n} v{e.default.version}" for n, e in self.repo.entries.items()
                                        if e.default) or "no models")
        print(f"modelkit serve: {self.repo.startup_state()}", flush=True)
        if self.options.poll_interval > 0 and self.repo.roots:
            await self.repo.poll(self.options.poll_interval)


def bind_message(host: str, port: int, exc: OSError) -> str:
    """One line saying why host:port cannot be bound, and what to do instead."""
    where = f"cannot listen on {_url_host(host)}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return f"{where}: the port is already in use; pick another with --port N, or --port 0 for a free one"
    if exc.errno == errno.EACCES:
        return f"{where}: permission denied (ports below 1024 need privileges); use --port 0 for a free one"
    return f"{where}: {exc.strerror or exc}"


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def serve(options: ServerOptions) -> int:
    """Run the server until SIGTERM/SIGINT; returns the process exit code: 0 after a clean drain, 1 when
    requests were still running after `drain_timeout` (they were cut off)."""
    server = Server(options)
    if sys.platform == "win32":  # pragma: no cover - add_signal_handler is POSIX only
        raise _errors.ModelkitError("modelkit serve needs a POSIX system")
    return asyncio.run(server.run())
