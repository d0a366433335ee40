"""The shared tuning database: one MetaSchedule JSONDatabase per target, used by every model and run.

MetaSchedule keys its records by workload: a task's TIR module, found by structural hash and compared
by structure (not by name, weights or model). So a layer tuned for one model (a 3x3 conv of given
shapes, a dense of given sizes) is found for every other model that has the same layer, and is not
tuned again.

Several compiles may write one database at once. Each keeps the database in memory and appends lines
to its two files; a workload line's position is the index its records point to, so two processes
appending blindly would point records at each other's workloads. Every read and every commit therefore
holds an exclusive `fcntl.flock` on `DIR/lock` (waits bounded by LOCK_TIMEOUT_S), and a commit reloads
the files first when they grew since this process last wrote (another compile appended). A line cut by a
killed process is dropped at the next open.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Iterator

from ...errors import ConversionError, first_line

WORKLOADS = "database_workload.json"
RECORDS = "database_tuning_record.json"
LOCK = "lock"
LOCK_TIMEOUT_S = 300.0  # a commit holds the lock for milliseconds; a reload of a large database, seconds


def target_key(tvm_target: dict[str, Any], tvm_version: str) -> str:
    """Same target dict + same TVM -> same shared database (records measured elsewhere do not apply)."""
    blob = json.dumps({"target": tvm_target, "tvm": tvm_version}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


@contextlib.contextmanager
def locked(db_dir: Path, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold the database's exclusive lock; ConversionError when another process holds it past timeout_s."""
    import fcntl

    Path(db_dir).mkdir(parents=True, exist_ok=True)
    fd = os.open(Path(db_dir) / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise ConversionError(f"the tuning database {db_dir} stayed locked by another process for "
                                          f"{timeout_s:.0f} s; retry when that compile is done") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _sizes(db_dir: Path) -> tuple[int, int]:
    return tuple(os.path.getsize(p) if p.is_file() else 0 for p in (db_dir / WORKLOADS, db_dir / RECORDS))


def _drop_cut_line(path: Path) -> None:
    """Truncate a file that does not end with a newline to its last complete line (a killed writer)."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as fh:
        fh.seek(-1, os.SEEK_END)
        if fh.read(1) == b"\n":  # the usual case: no need to read the whole file before TVM does
            return
        fh.seek(0)
        data = fh.read()
        fh.truncate(data.rfind(b"\n") + 1)


def _load(ms: Any, db_dir: Path) -> Any:
    """The JSONDatabase of db_dir (call with the lock held)."""
    for name in (WORKLOADS, RECORDS):
        _drop_cut_line(db_dir / name)
    try:
        return ms.database.JSONDatabase(path_workload=str(db_dir / WORKLOADS),
                                        path_tuning_record=str(db_dir / RECORDS))
    except Exception as exc:  # TVM's ValueError naming the bad line
        raise ConversionError(f"the tuning database {db_dir} cannot be read ({first_line(exc)}); "
                              "move it away to start a new one") from exc


def open_shared(db_dir: Path) -> Any:
    """A MetaSchedule database over the shared files in db_dir whose commits hold the lock.

    Its `inner` attribute is the plain in-memory JSONDatabase, for reads (counting, building)."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms

    db_dir = Path(db_dir)

    @derived_object
    class Shared(ms.database.PyDatabase):
        def __init__(self) -> None:
            super().__init__()
            with locked(db_dir):
                self.inner = _load(ms, db_dir)
                self.sizes = _sizes(db_dir)

        def _commit(self, fn: Any) -> Any:
            with locked(db_dir):
                if _sizes(db_dir) != self.sizes:  # another process appended: reload, so indexes line up
                    self.inner = _load(ms, db_dir)
                out = fn(self.inner)
                self.sizes = _sizes(db_dir)
            return out

        def has_workload(self, mod: Any) -> bool:
            return bool(self.inner.has_workload(mod))

        def commit_workload(self, mod: Any) -> Any:
            if self.inner.has_workload(mod):
                return self.inner.commit_workload(mod)  # known: no write
            return self._commit(lambda db: db.commit_workload(mod))

        def commit_tuning_record(self, record: Any) -> None:
            def commit(db: Any) -> None:
                db.commit_workload(record.workload.mod)  # a no-op unless a reload brought a fresh table
                db.commit_tuning_record(record)

            self._commit(commit)

        def get_top_k(self, workload: Any, top_k: int) -> Any:
            return self.inner.get_top_k(workload, top_k)

        def get_all_tuning_records(self) -> Any:
            return self.inner.get_all_tuning_records()

        def __len__(self) -> int:
            return len(self.inner)

    return Shared()


def valid_records(db: Any, mod: Any, at_most: int) -> int:
    """How many valid (measured, no error) records `db` holds for mod's workload, up to at_most."""
    if at_most <= 0 or not db.has_workload(mod):
        return 0
    return len(db.get_top_k(db.commit_workload(mod), at_most))
