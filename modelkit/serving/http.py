"""A small HTTP/1.1 server on asyncio streams: keep-alive, Content-Length and chunked bodies, a body
size limit enforced from the headers (413 before the body is read), 100-continue, and a drain mode
for graceful shutdown. The application is one coroutine: `handle(Request) -> Response`.
"""
from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from typing import Awaitable, Callable
from urllib.parse import parse_qs, unquote, urlsplit

from .errors import BadRequest, PayloadTooLarge, ServingError

log = logging.getLogger("modelkit.serving")

MAX_HEADER_BYTES = 64 * 1024
IDLE_TIMEOUT_S = 75.0
REASONS = {200: "OK", 100: "Continue", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
           408: "Request Timeout", 413: "Payload Too Large", 500: "Internal Server Error",
           503: "Service Unavailable", 431: "Request Header Fields Too Large"}


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
    """Serves `handler` on host:port. `drain()` stops accepting and waits for in-flight requests."""

    def __init__(self, handler: Handler, host: str, port: int, max_body_bytes: int):
        self.handler = handler
        self.host, self.port = host, port
        self.max_body_bytes = max_body_bytes
        self.draining = False
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._connection, self.host, self.port,
                                                  limit=MAX_HEADER_BYTES, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def drain(self, timeout: float | None = None) -> None:
        """Stop accepting connections, let accepted requests finish, then close idle connections."""
        self.draining = True
        if self._server is not None:
            self._server.close()
        await asyncio.wait_for(self._idle.wait(), timeout)
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
        try:
            req, keep = _parse_head(head)
            req.body = await self._read_body(req, reader, writer)
        except PayloadTooLarge as exc:
            await self._send(writer, error_response(413, str(exc)), close=True)
            await _linger(reader)
            return False
        except (BadRequest, asyncio.IncompleteReadError, ValueError) as exc:
            await self._send(writer, error_response(400, f"malformed HTTP request: {exc}"), close=True)
            return False
        try:
            resp = await self.handler(req)
        except ServingError as exc:
            resp = error_response(exc.status, str(exc))
        keep = keep and not self.draining
        await self._send(writer, resp, close=not keep)
        return keep

    async def _read_body(self, req: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
        te = req.headers.get("transfer-encoding", "").lower()
        length = req.headers.get("content-length")
        limit = self.max_body_bytes
        if te and te != "identity":
            if te != "chunked":
                raise BadRequest(f"unsupported transfer-encoding '{te}'")
            await _continue(req, writer)
            return await _read_chunked(reader, limit)
        if length is None:
            return b""
        if not length.isdigit():
            raise BadRequest(f"bad content-length '{length}'")
        n = int(length)
        if n > limit:
            raise PayloadTooLarge(f"request body of {n} bytes exceeds the limit of {limit} bytes")
        await _continue(req, writer)
        return await reader.readexactly(n) if n else b""

    async def _send(self, writer: asyncio.StreamWriter, resp: Response, close: bool) -> None:
        reason = REASONS.get(resp.status, "Unknown")
        lines = [f"HTTP/1.1 {resp.status} {reason}", f"Content-Type: {resp.content_type}",
                 f"Content-Length: {len(resp.body)}", "Connection: " + ("close" if close else "keep-alive")]
        lines += [f"{k}: {v}" for k, v in resp.headers.items()]
        try:
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + resp.body)
            await writer.drain()
        except ConnectionError:
            pass  # the client went away; nothing left to tell it


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
        if not sep:
            raise BadRequest(f"bad header line '{line[:100]}'")
        headers[name.strip().lower()] = value.strip()
    url = urlsplit(target)
    keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
    if version == "HTTP/1.0" and headers.get("connection", "").lower() == "keep-alive":
        keep = True
    return Request(method.upper(), unquote(url.path), parse_qs(url.query), headers), keep


async def _continue(req: Request, writer: asyncio.StreamWriter) -> None:
    if req.headers.get("expect", "").lower() == "100-continue":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await writer.drain()


async def _read_chunked(reader: asyncio.StreamReader, limit: int) -> bytes:
    chunks, total = [], 0
    while True:
        line = await reader.readuntil(b"\r\n")
        size = int(line.split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                pass
            return b"".join(chunks)
        total += size
        if total > limit:
            raise PayloadTooLarge(f"chunked request body exceeds the limit of {limit} bytes")
        chunks.append(await reader.readexactly(size))
        await reader.readexactly(2)


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
