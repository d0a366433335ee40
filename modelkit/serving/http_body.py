"""Request bodies for modelkit's HTTP server: framing (Content-Length or chunked), the per-connection
stall deadline, and the global budget of buffered body bytes.

Rules (RFC 9112 where it has one):
- Content-Length: digits only; a repeated header or a list is accepted only when every value is the
  same ("5, 5" is 5), conflicting values are a 400. Content-Length together with Transfer-Encoding is a
  400 (a request smuggling vector), as is any Transfer-Encoding other than `chunked`.
- chunked: the size is 1-16 hex digits (extensions after ';' are ignored), a size line over 4 KiB is a
  400, a trailer section over 64 KiB is a 431, and every chunk must end with CRLF.
- A body that receives no bytes for `timeout` seconds is a 408; when the server drains, a body still
  arriving is refused at once with 503 (it never reached the application).
- Bytes of bodies are reserved in a `Budget` shared by all connections before they are read (the whole
  Content-Length up front, chunked bodies chunk by chunk); going over it is a 503.
"""
from __future__ import annotations

import asyncio
import re
from typing import Callable

from .errors import BadRequest, BodyBudgetExceeded, HeaderTooLarge, PayloadTooLarge, RequestTimeout, ShuttingDown

MAX_SIZE_LINE = 4096
MAX_TRAILER_BYTES = 64 * 1024
READ_CHUNK = 1 << 20
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
_DIGITS = re.compile(r"[0-9]{1,20}")


class Budget:
    """Bytes of request bodies held in memory across all connections, against a limit."""

    def __init__(self, limit: int):
        self.limit, self.used = int(limit), 0

    def take(self, n: int) -> None:
        if self.used + n > self.limit:
            raise BodyBudgetExceeded(
                f"the server is buffering {self.used} bytes of request bodies; {n} more would exceed its "
                f"budget of {self.limit} bytes; retry later")
        self.used += n

    def give(self, n: int) -> None:
        self.used -= n


class Deadline:
    """The stall deadline of one body read: `touch()` after each read pushes it `timeout` s ahead (a float
    store; one timer per body re-arms itself lazily), `expire()` (drain) ends it at once. Leaving the
    block after it fired raises RequestTimeout, or ShuttingDown when the server is draining."""

    def __init__(self, timeout: float, draining: Callable[[], bool]):
        self.timeout, self.draining = timeout, draining
        self.fired = False
        self._loop = asyncio.get_running_loop()
        self._task: asyncio.Task | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._last = 0.0

    async def __aenter__(self) -> "Deadline":
        if self.draining():
            raise ShuttingDown("server is shutting down")
        self._task = asyncio.current_task()
        self._last = self._loop.time()
        self._handle = self._loop.call_at(self._last + self.timeout, self._check)
        return self

    async def __aexit__(self, exc_type: type | None, exc: BaseException | None, tb: object) -> bool:
        if self._handle is not None:
            self._handle.cancel()
        if self.fired and self._task is not None and self._task.uncancel() == 0 \
                and exc_type is asyncio.CancelledError:  # our own cancellation, not the task's
            if self.draining():
                raise ShuttingDown("server is shutting down; the request body had not fully arrived") from None
            raise RequestTimeout(f"request body timed out: no data for {self.timeout:g} s") from None
        return False

    def _check(self) -> None:
        due = self._last + self.timeout
        if self._loop.time() >= due:
            self._fire()
        else:
            self._handle = self._loop.call_at(due, self._check)

    def _fire(self) -> None:
        if not self.fired and self._task is not None:
            self.fired = True
            self._task.cancel()

    def touch(self) -> None:
        if self.draining():
            raise ShuttingDown("server is shutting down; the request body had not fully arrived")
        self._last = self._loop.time()

    def expire(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._fire()


def content_length(value: str) -> int:
    """The value of Content-Length header(s) (repeated headers arrive joined by ', ')."""
    parts = [p.strip(" \t") for p in value.split(",")]
    if not all(_DIGITS.fullmatch(p) for p in parts):
        raise BadRequest(f"bad content-length '{value[:100]}'")
    if len({int(p) for p in parts}) != 1:
        raise BadRequest(f"conflicting Content-Length values '{value[:100]}'")
    return int(parts[0])


def framing(headers: dict[str, str]) -> int | None:
    """The body length from the headers, or None for a chunked body. Refuses ambiguous framing."""
    te = headers.get("transfer-encoding")
    length = headers.get("content-length")
    if te is not None and length is not None:
        raise BadRequest("both Content-Length and Transfer-Encoding are set (refused: request smuggling)")
    if te is not None and te.lower() not in ("", "identity"):
        if te.lower() != "chunked":
            raise BadRequest(f"unsupported transfer-encoding '{te[:100]}'")
        return None
    return 0 if length is None else content_length(length)


async def read_exact(reader: asyncio.StreamReader, n: int, deadline: Deadline, out: list[bytes]) -> None:
    """Append exactly n bytes to out, pushing the deadline after every read."""
    while n > 0:
        data = await reader.read(min(n, READ_CHUNK))
        if not data:
            raise asyncio.IncompleteReadError(b"", n)
        out.append(data)
        n -= len(data)
        deadline.touch()


async def read_chunked(reader: asyncio.StreamReader, limit: int, deadline: Deadline, reserve: Callable[[int], None]
                       ) -> bytes:
    """A chunked body, at most `limit` bytes; `reserve(n)` is called before each chunk is read."""
    chunks: list[bytes] = []
    total = 0
    while True:
        line = await _line(reader, BadRequest, "a chunk size line is over 64 KiB")
        deadline.touch()
        if len(line) > MAX_SIZE_LINE:
            raise BadRequest(f"a chunk size line is over {MAX_SIZE_LINE} bytes")
        size_s = line[:-2].split(b";", 1)[0].strip(b" \t")
        if not _HEX.fullmatch(size_s):
            raise BadRequest(f"bad chunk size {size_s[:40]!r}")
        size = int(size_s, 16)
        if size == 0:
            break
        total += size
        if total > limit:
            raise PayloadTooLarge(f"chunked request body exceeds the limit of {limit} bytes")
        reserve(size)
        await read_exact(reader, size, deadline, chunks)
        if await reader.readexactly(2) != b"\r\n":
            raise BadRequest("a chunk does not end with CRLF")
        deadline.touch()
    too_large = f"the trailer section is over {MAX_TRAILER_BYTES} bytes"
    trailer = 0
    while (line := await _line(reader, HeaderTooLarge, too_large)) != b"\r\n":
        deadline.touch()
        trailer += len(line)
        if trailer > MAX_TRAILER_BYTES:
            raise HeaderTooLarge(too_large)
    return b"".join(chunks)


async def _line(reader: asyncio.StreamReader, error: type[Exception], message: str) -> bytes:
    """One CRLF-terminated line; a line longer than the reader's limit raises error(message)."""
    try:
        return await reader.readuntil(b"\r\n")
    except asyncio.LimitOverrunError as exc:
        raise error(message) from exc
