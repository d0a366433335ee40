"""Real `modelkit serve` processes on 127.0.0.1 free ports, plain HTTP clients, bounded waits.

Every server a test starts is stopped at the end of that test (SIGTERM, then SIGKILL after 20 s).
"""
from __future__ import annotations

import pytest

from tests.helpers import ServerProcess


@pytest.fixture
def serve(tmp_path):
    """serve(*args, ready=True) -> a started ServerProcess; all are stopped after the test."""
    started: list[ServerProcess] = []

    def start(*args: str, ready: bool = True) -> ServerProcess:
        s = ServerProcess([str(a) for a in args], tmp_path / f"server{len(started)}.log", tmp_path)
        started.append(s)
        if ready:
            s.wait_ready()
        return s

    yield start
    for s in started:
        s.stop()
