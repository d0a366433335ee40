"""Request bodies that stall or pile up (issue 14): a body that stops arriving gets 408 after
--body-timeout and leaves the in-flight gauge; bodies across all connections share a budget
(--max-buffered-mb, 503 beyond it) so memory stays bounded; SIGTERM does not wait for stalled bodies."""
from __future__ import annotations

import json
import signal
import socket
import threading
import time

from tests.helpers import HOST, call, make_tiny_onnx, metrics, v2_request
from tests.security._load import rss_mb

IN_FLIGHT = "modelkit_in_flight_requests"
HEAD = "POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"


def wait_for(predicate, timeout: float, what: str, step: float = 0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def in_flight(port: int) -> float:
    return metrics(port)[IN_FLIGHT]  # counts the /metrics request itself: 1 when nothing else runs


def read_reply(s: socket.socket, timeout: float) -> bytes:
    """One response (head and Content-Length body; a 100 Continue is just its head), or what came
    before the server closed, or b"" on timeout."""
    s.settimeout(timeout)
    data = b""
    try:
        while True:
            head, sep, rest = data.partition(b"\r\n\r\n")
            if sep:
                lengths = [int(v) for k, _, v in (h.partition(b":") for h in head.split(b"\r\n")[1:])
                           if k.strip().lower() == b"content-length"]
                if not lengths or len(rest) >= lengths[0]:
                    return data
            chunk = s.recv(65536)
            if not chunk:
                return data
            data += chunk
    except (ConnectionResetError, TimeoutError):
        return data


def stalled(port: int, length: int = 1000, sent: int = 10) -> socket.socket:
    s = socket.create_connection((HOST, port), timeout=30)
    s.sendall(f"{HEAD}Content-Length: {length}\r\n\r\n".encode() + b"{" * sent)
    return s


def test_stalled_body_gets_408_and_leaves_the_in_flight_gauge(serve, tmp_path):
    server = serve(make_tiny_onnx(tmp_path / "tiny.onnx"), "--body-timeout", 1)
    port = server.port
    assert in_flight(port) == 1
    with stalled(port) as s:
        start = time.monotonic()
        wait_for(lambda: in_flight(port) == 2, 10, "the stalled request to be counted")
        reply = read_reply(s, 20)
        took = time.monotonic() - start
    assert reply.startswith(b"HTTP/1.1 408 "), reply[:200]
    assert b"no data for 1 s" in reply or b"timed out" in reply
    assert 0.9 <= took < 15, took
    wait_for(lambda: in_flight(port) == 1, 10, "the gauge to go back down after the 408")
    # a client that gives up mid-body leaves the gauge too
    with stalled(port, 5000, 100):
        wait_for(lambda: in_flight(port) == 2, 10, "the second stalled request to be counted")
    wait_for(lambda: in_flight(port) == 1, 10, "the gauge to go back down after the client left")
    assert call(port, "POST", "/v2/models/tiny/infer", v2_request([[1, 2, 3, 4]]))[0] == 200


def test_buffered_bodies_share_a_budget_and_memory_stays_bounded(serve, tmp_path):
    """Ten clients announce 16 MB bodies, send 15 MB and pause, against a 32 MiB budget: two are let in,
    the others get 503 before sending anything; the two get 408 when their bodies stall."""
    server = serve(make_tiny_onnx(tmp_path / "tiny.onnx"), "--max-body-mb", 16, "--max-buffered-mb", 32,
                   "--body-timeout", 5)
    port = server.port
    for _ in range(20):  # warm up the allocator and the connection path
        assert call(port, "POST", "/v2/models/tiny/infer", v2_request([[1, 2, 3, 4]]))[0] == 200
    before = rss_mb(server.proc.pid)
    announced, sent = 16_000_000, 15_000_000
    socks = []
    try:
        first: list[bytes] = []
        for _ in range(10):  # Expect: 100-continue tells each client at once whether its body is wanted
            s = socket.create_connection((HOST, port), timeout=30)
            socks.append(s)
            s.sendall(f"{HEAD}Expect: 100-continue\r\nContent-Length: {announced}\r\n\r\n".encode())
            first.append(read_reply(s, 20))
        admitted = [s for s, r in zip(socks, first) if r.startswith(b"HTTP/1.1 100 ")]
        refused = [r for r in first if r.startswith(b"HTTP/1.1 503 ")]
        assert len(admitted) == 2 and len(refused) == 8, [r[:40] for r in first]
        assert all(b"budget of 33554432 bytes" in r and b"Retry-After: 1" in r for r in refused), refused[0]
        for s in admitted:
            s.sendall(b" " * sent)
        wait_for(lambda: rss_mb(server.proc.pid) - before > 10, 20, "the admitted bodies to arrive")
        samples = [rss_mb(server.proc.pid)]

        def settled() -> bool:  # two readings 0.5 s apart within 1 MB: the bodies are in
            samples.append(rss_mb(server.proc.pid))
            return abs(samples[-1] - samples[-2]) < 1

        wait_for(settled, 20, "the server's memory to settle", step=0.5)
        peak = max(samples)
        # without Expect the answer comes before the body is read, too
        with socket.create_connection((HOST, port), timeout=30) as s:
            s.sendall(f"{HEAD}Content-Length: {announced}\r\n\r\n".encode() + b" " * 65536)
            assert read_reply(s, 20).startswith(b"HTTP/1.1 503 ")
        print(f"RSS {before:.0f} MB -> {peak:.0f} MB with 2 x {sent / 1e6:.0f} MB admitted of 10 clients")
        assert peak - before < 80, (before, peak)  # unbounded: 10 x 15 MB = 150 MB
        for s in admitted:
            assert read_reply(s, 30).startswith(b"HTTP/1.1 408 ")
    finally:
        for s in socks:
            s.close()
    wait_for(lambda: in_flight(port) == 1, 10, "every stalled request to end")
    body = json.dumps(v2_request([[1, 2, 3, 4]])).encode()
    with socket.create_connection((HOST, port), timeout=30) as s:  # the budget was given back
        s.sendall(f"{HEAD}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        assert read_reply(s, 20).startswith(b"HTTP/1.1 200 ")


def test_sigterm_does_not_wait_for_a_stalled_body(serve, tmp_path):
    server = serve(make_tiny_onnx(tmp_path / "tiny.onnx"), "--max-batch-size", 64, "--max-delay-ms", 5000)
    port = server.port
    answers: list = []
    busy = threading.Thread(target=lambda: answers.append(
        call(port, "POST", "/v2/models/tiny/infer", v2_request([[1, 2, 3, 4]]), timeout=30)))
    with stalled(port) as s:
        busy.start()  # an accepted request waiting in the batch queue: it must still be answered
        wait_for(lambda: in_flight(port) == 3, 10, "both requests to be counted")
        server.proc.send_signal(signal.SIGTERM)
        start = time.monotonic()
        assert server.proc.wait(20) == 0
        took = time.monotonic() - start
        reply = read_reply(s, 10)
    busy.join(20)
    assert took < 10, took  # the default body timeout is 30 s and the drain timeout 60 s
    assert reply == b"" or reply.startswith(b"HTTP/1.1 503 "), reply[:200]
    assert answers and answers[0][0] == 200, answers
    assert "modelkit serve: stopped" in server.text() and "drain timed out" not in server.text()
