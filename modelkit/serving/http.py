"""A small HTTP/1.1 server on asyncio streams: keep-alive, Content-Length and chunked bodies, a body
size limit enforced from the headers (413 before the body is read), a stall timeout on bodies (408), a
budget of buffered body bytes across all connections (503), 100-continue, and a bounded drain mode for
graceful shutdown. The application is one coroutine: `handle(Request) -> Response`.
Body framing and its limits are in http_body.py.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
from dataclasses import dataclass, field
from typing import Awaitable, Callable
from urllib.parse import parse_qs, unquote, urlsplit

from .errors import BadRequest, PayloadTooLarge, ServingError
from .http_body import Budget, Deadline, framing, read_chunked, read_exact

log = logging.getLogger("modelkit.serving")

MAX_HEADER_BYTES = 64 * 1024
IDLE_TIMEOUT_S = 75.0
BODY_TIMEOUT_S = 30.0
REASONS = {200: "OK", 100: "Continue", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
           408: "Request Timeout", 413: "Payload Too Large", 500: "Internal Server Error",
           503: "Service Unavailable", 431: "Request Header Fields Too Large"}
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes = b""


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def json_response(obj: object, status: int = 200) -> Response:
    return Response(status, json.dumps(obj, separators=(",", ":")).encode())


def error_response(status: int, message: str) -> Response:
    return json_response({"error": message}, status)


Handler = Callable[[Request], Awaitable[Response]]


class HTTPServer:
    """Serves `handler` on host:port. `drain()` stops accepting and waits for in-flight requests.

    body_timeout: seconds without a byte of a request body (or of a response being sent) before the
    request is given up (408 for bodies). max_buffered_bytes: budget of request-body bytes held across
    all connections (None: 4 x max_body_bytes); a body that would exceed it gets 503.
    """

    def __init__(self, handler: Handler, host: str, port: int, max_body_bytes: int,
                 body_timeout: float = BODY_TIMEOUT_S, max_buffered_bytes: int | None = None):
        self.handler = handler
        self.host, self.port = host, port
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout
        self.budget = Budget(4 * max_body_bytes if max_buffered_bytes is None else max_buffered_bytes)
        self.draining = False
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._deadlines: set[Deadline] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._connection, self.host, self.port,
                                                  limit=MAX_HEADER_BYTES, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def drain(self, timeout: float | None = None) -> None:
        """Stop accepting connections, refuse bodies still arriving (503), let requests that reached the
        application finish, then close every connection. On TimeoutError the connections are cut."""
        self.draining = True
        if self._server is not None:
            self._server.close()
        for d in list(self._deadlines):
            d.expire()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            for w in list(self._writers):
                w.transport.abort()
            raise
        for w in list(self._writers):
            w.close()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while not self.draining:
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IDLE_TIMEOUT_S)
                except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
                    return
                except asyncio.LimitOverrunError:
                    await self._send(writer, error_response(431, "request head too large"), close=True)
                    return
                # No await between reading the head and counting the request: drain() sees it.
                if self.draining:
                    await self._send(writer, error_response(503, "server is shutting down"), close=True)
                    return
                self._begin()
                try:
                    keep = await self._one(head, reader, writer)
                finally:
                    self._end()
                if not keep:
                    return
        except Exception:  # noqa: BLE001 - last resort for one connection: logged with its traceback,
            # the connection is closed; the server and every other connection carry on.
            log.exception("connection handler failed")
        finally:
            self._writers.discard(writer)
            writer.close()

    def _begin(self) -> None:
        self.in_flight += 1
        self._idle.clear()

    def _end(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    async def _one(self, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        reserved = [0]
        try:
            try:
                req, keep = _parse_head(head)
                req.body = await self._read_body(req, reader, writer, reserved)
            except ServingError as exc:  # 400, 408, 413, 431, 503: the connection is closed after it
                status = exc.status
                message = f"malformed HTTP request: {exc}" if status == 400 else str(exc)
                resp = error_response(status, message)
                if status == 503:
                    resp.headers["Retry-After"] = "1"
                await self._send(writer, resp, close=True)
                if status in (413, 503) and not self.draining:
                    await _linger(reader)
                return False
            except (asyncio.IncompleteReadError, ConnectionError, ValueError) as exc:
                await self._send(writer, error_response(400, f"malformed HTTP request: {exc}"), close=True)
                return False
            try:
                resp = await self.handler(req)
            except ServingError as exc:
                resp = error_response(exc.status, str(exc))
            req.body = b""
            self.budget.give(reserved[0])
            reserved[0] = 0
            keep = keep and not self.draining
            await self._send(writer, resp, close=not keep)
            return keep
        finally:
            self.budget.give(reserved[0])

    async def _read_body(self, req: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         reserved: list[int]) -> bytes:
        n = framing(req.headers)
        limit = self.max_body_bytes
        if n is not None and n > limit:
            raise PayloadTooLarge(f"request body of {n} bytes exceeds the limit of {limit} bytes")
        if n == 0:
            return b""

        def reserve(k: int) -> None:
            self.budget.take(k)
            reserved[0] += k

        if n is not None:
            reserve(n)
        async with Deadline(self.body_timeout, lambda: self.draining) as deadline:
            self._deadlines.add(deadline)
            try:
                await _continue(req, writer)
                if n is None:
                    return await read_chunked(reader, limit, deadline, reserve)
                chunks: list[bytes] = []
                await read_exact(reader, n, deadline, chunks)
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)
            finally:
                self._deadlines.discard(deadline)

    async def _send(self, writer: asyncio.StreamWriter, resp: Response, close: bool) -> None:
        reason = REASONS.get(resp.status, "Unknown")
        lines = [f"HTTP/1.1 {resp.status} {reason}", f"Content-Type: {resp.content_type}",
                 f"Content-Length: {len(resp.body)}", "Connection: " + ("close" if close else "keep-alive")]
        lines += [f"{k}: {v}" for k, v in resp.headers.items()]
        try:
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + resp.body)
            if writer.transport.get_write_buffer_size() == 0:
                await writer.drain()  # all handed to the socket: returns at once
            else:
                async with asyncio.timeout(self.body_timeout):
                    await writer.drain()
        except ConnectionError:
            pass  # the client went away; nothing left to tell it
        except TimeoutError:  # the client does not read its answer: give the connection up
            writer.transport.abort()


def _parse_head(head: bytes) -> tuple[Request, bool]:
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError as exc:  # latin-1 decodes anything; kept for clarity
        raise BadRequest(str(exc)) from exc
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadRequest(f"bad request line '{lines[0][:100]}'")
    method, target, version = parts
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN.fullmatch(name):  # also refuses "Name :" and obsolete line folding
            raise BadRequest(f"bad header line '{line[:100]}'")
        key, value = name.lower(), value.strip(" \t")
        headers[key] = f"{headers[key]}, {value}" if key in headers else value  # repeated: one list
    url = urlsplit(target)
    keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
    if version == "HTTP/1.0" and headers.get("connection", "").lower() == "keep-alive":
        keep = True
    return Request(method.upper(), unquote(url.path), parse_qs(url.query), headers), keep


async def _continue(req: Request, writer: asyncio.StreamWriter) -> None:
    if req.headers.get("expect", "").lower() == "100-continue":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await writer.drain()


async def _linger(reader: asyncio.StreamReader, max_bytes: int = 1 << 20, seconds: float = 0.2) -> None:
    """Discard a little of what the client is still sending so it can read the 413 before we close."""
    loop = asyncio.get_running_loop()
    end, seen = loop.time() + seconds, 0
    while seen < max_bytes and (left := end - loop.time()) > 0:
        try:
            data = await asyncio.wait_for(reader.read(65536), left)
        except (TimeoutError, ConnectionError):
            return
        if not data:
            return
        seen += len(data)
