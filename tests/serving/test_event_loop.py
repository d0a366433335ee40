"""Model loading never blocks the server's event loop (issue 14): repository scans, format detection
and content keys run in threads, so a slow filesystem (here: a detect() that waits on a gate) stalls
only the model being loaded."""
from __future__ import annotations

import asyncio
import threading
import time

from modelkit.serving import repository
from modelkit.serving.metrics import Metrics
from modelkit.serving.repository import Repository, ServeConfig
from tests.helpers import make_tiny_onnx


def test_loading_a_repository_runs_filesystem_work_off_the_loop(tmp_path, monkeypatch):
    version = tmp_path / "repo" / "tiny" / "1"
    version.mkdir(parents=True)
    make_tiny_onnx(version / "model.onnx")
    gate = threading.Event()
    blocked = threading.Event()
    real_detect = repository.detect

    blocked_at: list[float] = []

    def slow_detect(path):
        blocked_at.append(time.monotonic())
        blocked.set()
        gate.wait(15)  # released by the test (or after 15 s: on the loop thread it would block it that long)
        return real_detect(path)

    monkeypatch.setattr(repository, "detect", slow_detect)

    async def main() -> None:
        repo = Repository(ServeConfig(max_batch_size=2), Metrics())
        repo.add_source(str(tmp_path / "repo"))
        loading = asyncio.create_task(repo.load_all())
        deadline = time.monotonic() + 30
        while not blocked.is_set():  # the loop turns while detect() is blocked in its thread
            assert time.monotonic() < deadline, "detect() was never called"
            await asyncio.sleep(0.01)
        for _ in range(20):
            await asyncio.sleep(0.01)
        assert time.monotonic() - blocked_at[0] < 10, "the event loop was blocked while detect() waited"
        assert not loading.done() and not gate.is_set()
        gate.set()
        await asyncio.wait_for(loading, 120)
        assert repo.entries["tiny"].default is not None and repo.ready()
        await repo.close()

    try:
        asyncio.run(main())
    finally:
        gate.set()
