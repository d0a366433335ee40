"""Dynamic batching for one model version.

Requests wait in a bounded queue; one worker takes the first, then gathers more until max_batch_size
rows or max_delay_ms have passed, concatenates them on the batch dimension, runs the engine once in
the version's own thread, and splits the outputs back (a merged call that fails runs again one request at a
time: a request's error is its own). A full queue answers QueueFull at once.
Models whose inputs and outputs do not all have a dynamic batch dimension run one request per call, except a
library compiled for a fixed batch N (a tuned TVM library): it takes requests of any row count, gathered up to N
rows and run N at a time (converters.samples.predict_rows; a short last call filled up with repeated rows whose
outputs are dropped), and its served signature has an open batch (served_signature).
"""
from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from .errors import QueueFull, Retired, ServingError
from .metrics import Metrics

log = logging.getLogger("modelkit.serving")


@dataclass
class _Item:
    inputs: dict[str, np.ndarray]
    rows: int
    key: tuple
    future: asyncio.Future


_STOP = object()


def batchable(model: Any) -> bool:
    """Whether requests may be merged into one call: an open batch on every input and output, and rows that do
    not depend on each other (a manifest's `rows_coupled`, converters/determinism.py: merged, one client's answer
    would depend on another's request)."""
    sig = model.signature
    return all(s.rank >= 1 and s.shape[0] is None for s in (*sig.inputs, *sig.outputs)) and not _rows_coupled(model)


def _rows_coupled(model: Any) -> bool:
    from .. import manifest as _manifest
    from ..errors import ModelkitError

    try:
        m = _manifest.read(model.path)
    except ModelkitError:  # a corrupt manifest is the engine's business
        return False
    return bool(m is not None and (m.extra or {}).get("rows_coupled"))


def fixed_rows(sig: Any) -> int | None:
    """N when every input and output of `sig` has the same fixed batch N (a library compiled for one batch)."""
    from ..converters.samples import fixed_batch

    n = fixed_batch(sig)
    return n if n and all(s.rank >= 1 and s.shape[0] == n for s in sig.outputs) else None


def served_signature(sig: Any) -> Any:
    """`sig` as the server takes it: a fixed batch opened (the batcher runs any row count N at a time)."""
    from dataclasses import replace

    if not fixed_rows(sig):
        return sig
    return replace(sig, inputs=tuple(replace(s, shape=(None, *s.shape[1:])) for s in sig.inputs),
                   outputs=tuple(replace(s, shape=(None, *s.shape[1:])) for s in sig.outputs))


class Batcher:
    def __init__(self, model: Any, name: str, version: int, metrics: Metrics, max_batch_size: int = 32,
                 max_delay_ms: float = 2.0, queue_size: int = 256):
        self.model, self.name, self.version = model, name, str(version)
        self.metrics = metrics
        self.fixed = fixed_rows(model.signature)
        self.max_batch = self.fixed or (max(1, int(max_batch_size)) if batchable(model) else 1)
        self.max_delay = max(0.0, float(max_delay_ms)) / 1000.0
        self.queue_size = max(1, int(queue_size))
        self.pending = 0  # admitted and not yet answered (waiting, gathered or running)
        self.closed = False
        self._queue: asyncio.Queue = asyncio.Queue()
        self._carry: _Item | None = None
        self._flush = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"engine-{name}-{version}")
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._worker(), name=f"batcher-{self.name}")

    async def submit(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Queue one validated request and wait for its outputs."""
        if self.closed:
            raise Retired(f"model '{self.name}' version {self.version} is being unloaded")
        if self.pending >= self.queue_size:
            raise QueueFull(f"model '{self.name}': queue is full ({self.queue_size} requests); retry later")
        first = next(iter(inputs.values()))
        rows = int(first.shape[0]) if first.ndim else 1
        key = tuple((n, a.shape[1:]) for n, a in inputs.items())
        fut = asyncio.get_running_loop().create_future()
        self.pending += 1
        try:
            self._queue.put_nowait(_Item(inputs, rows, key, fut))
            return await fut
        finally:
            self.pending -= 1

    def _predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self.fixed:
            return self.model.predict(inputs)
        from ..converters.samples import predict_rows

        return predict_rows(self.model, inputs)

    def run_sync(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run directly in the calling thread (warm-up before the version serves)."""
        return self.model.predict(inputs)

    async def close(self) -> None:
        """Refuse new requests, finish every queued one, stop the worker and its thread."""
        self.closed = True
        self._flush.set()
        self._queue.put_nowait(_STOP)
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=False)

    def flush(self) -> None:
        """Stop waiting for more rows (shutdown): run what is queued now."""
        self._flush.set()

    async def _next(self, timeout: float | None) -> Any:
        if self._carry is not None:
            item, self._carry = self._carry, None
            return item
        if timeout is None:
            return await self._queue.get()
        try:
            return self._queue.get_nowait()
        except asyncio.QueueEmpty:
            pass
        if timeout <= 0 or self._flush.is_set():
            raise TimeoutError
        # Wait for the next request, the deadline, or a flush (shutdown), whichever comes first.
        getter = asyncio.ensure_future(self._queue.get())
        flushed = asyncio.ensure_future(self._flush.wait())
        done, _ = await asyncio.wait({getter, flushed}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        flushed.cancel()
        if getter in done:
            return getter.result()
        getter.cancel()  # a cancelled Queue.get leaves its item in the queue
        raise TimeoutError

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        stopping = False
        while not stopping:
            first = await self._next(None)
            if first is _STOP:
                return
            batch, rows = [first], first.rows
            deadline = loop.time() + self.max_delay
            while rows < self.max_batch:
                try:
                    item = await self._next(deadline - loop.time())
                except TimeoutError:
                    break
                if item is _STOP:
                    stopping = True
                    break
                if item.key != first.key or rows + item.rows > self.max_batch:
                    self._carry = item
                    break
                batch.append(item)
                rows += item.rows
            await self._run(batch, rows)
        while self._carry is not None or not self._queue.empty():  # after _STOP: nothing is left, normally
            item = await self._next(0.0)
            if item is not _STOP:
                await self._run([item], item.rows)

    async def _run(self, batch: list[_Item], rows: int) -> None:
        loop = asyncio.get_running_loop()
        if len(batch) == 1:
            inputs = batch[0].inputs
        else:
            inputs = {n: np.concatenate([it.inputs[n] for it in batch]) for n in batch[0].inputs}
        try:
            outputs = await loop.run_in_executor(self._executor, self._predict, inputs)
        except Exception as exc:  # noqa: BLE001 - engines raise their own types (tf OpError, ort Fail):
            # never swallowed: logged with its traceback here and re-raised into the waiting request, whose
            # handler answers 500 (or 400 for a ModelkitError about the input). A merged batch is run again one
            # request at a time, so that one request's rows (an int8 TFLite mean over a row of padding only
            # divides by zero and fails the whole call) fail that request alone, not its batch-mates.
            if isinstance(exc, InputError) and len(batch) == 1:  # a size past what the artifact takes (an
                # ExecuTorch program's planned length): the request's own error, answered 400; no traceback
                log.warning("model '%s' v%s: a request's inputs refused by the engine: %s", self.name, self.version,
                            exc)
            else:
                log.error("model '%s' v%s: engine failed on a batch of %d rows%s: %s", self.name, self.version,
                          rows, f" ({len(batch)} requests: run again one by one)" if len(batch) > 1 else "", exc,
                          exc_info=not isinstance(exc, (ServingError, InputError)))
            if len(batch) > 1:
                for it in batch:
                    await self._run([it], it.rows)
                return
            if not batch[0].future.done():
                batch[0].future.set_exception(exc)
            return
        self.metrics.engine_calls.inc(self.name, self.version)
        self.metrics.batched_requests.inc(self.name, self.version, by=len(batch))
        self.metrics.batch_size.observe(rows, self.name, self.version)
        if len(batch) == 1:
            if not batch[0].future.done():
                batch[0].future.set_result(outputs)
            return
        start = 0
        for it in batch:
            part = {k: v[start:start + it.rows] for k, v in outputs.items()}
            start += it.rows
            if not it.future.done():
                it.future.set_result(part)


async def submit_current(repo: Any, name: str, version: str | None, decode: Any) -> tuple[Any, Any, dict[str, Any]]:
    """Decode a request against the version that will run it, and submit it to that version's batcher.

    A hot-swap can retire the version between the lookup and the submit; the request then goes once
    more to the version now current (unless it named a version). Returns (version, decoded, outputs).
    """
    for attempt in (0, 1):
        v = repo.get(name, version)
        decoded = decode(v.signature)
        try:
            return v, decoded, await v.batcher.submit(decoded[0])
        except Retired:
            if attempt or version:
                raise
    raise Retired(f"model '{name}' was retired twice while the request waited")
