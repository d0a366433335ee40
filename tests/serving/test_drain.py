"""HTTPServer's drain in-process (issue 14): a request still sending its body is refused at once (503)
instead of holding the drain; a handler that never finishes makes drain() time out, and its connection
is cut. (`modelkit serve` turns that timeout into exit code 1; docs/serving.md.)"""
from __future__ import annotations

import asyncio
import time

from modelkit.serving.http import HTTPServer, Request, Response
from tests.helpers import HOST


async def _read_all(reader: asyncio.StreamReader, timeout: float) -> bytes:
    try:
        return await asyncio.wait_for(reader.read(), timeout)
    except ConnectionError:
        return b""


def test_drain_refuses_a_stalled_body_and_answers_the_running_request():
    async def main() -> None:
        release = asyncio.Event()
        started = asyncio.Event()

        async def handler(req: Request) -> Response:
            started.set()
            await release.wait()
            return Response(200, b'{"ok":true}')

        server = HTTPServer(handler, HOST, 0, max_body_bytes=1 << 20, body_timeout=600)
        port = await server.start()
        r1, w1 = await asyncio.open_connection(HOST, port)  # a running request
        w1.write(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.wait_for(started.wait(), 20)
        r2, w2 = await asyncio.open_connection(HOST, port)  # a body that stopped arriving
        w2.write(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789")
        deadline = time.monotonic() + 20
        while server.in_flight < 2:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        drain = asyncio.create_task(server.drain(timeout=30))
        stalled = await _read_all(r2, 20)
        assert stalled.startswith(b"HTTP/1.1 503 ") and b"shutting down" in stalled, stalled
        assert not drain.done()  # the running request still holds it
        release.set()
        await asyncio.wait_for(drain, 20)
        running = await _read_all(r1, 20)
        assert running.startswith(b"HTTP/1.1 200 ") and running.endswith(b'{"ok":true}'), running
        assert server.in_flight == 0
        for w in (w1, w2):
            w.close()

    asyncio.run(main())


def test_drain_times_out_on_a_stuck_handler_and_cuts_it_off():
    async def main() -> None:
        never = asyncio.Event()

        async def handler(req: Request) -> Response:
            await never.wait()
            return Response(200)

        server = HTTPServer(handler, HOST, 0, max_body_bytes=1 << 20)
        port = await server.start()
        reader, writer = await asyncio.open_connection(HOST, port)
        writer.write(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
        deadline = time.monotonic() + 20
        while server.in_flight < 1:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        start = time.monotonic()
        try:
            await server.drain(timeout=0.5)
        except TimeoutError:
            pass
        else:
            raise AssertionError("drain() returned although a request was still running")
        assert time.monotonic() - start < 10
        assert await _read_all(reader, 10) == b""  # cut off: no answer, connection closed
        writer.close()
        never.set()

    asyncio.run(main())

