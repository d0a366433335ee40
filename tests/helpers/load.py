"""LoadWorker: a child process that loads files under a memory limit (RLIMIT_AS) and a per-file time limit,
so a native crash or a hang shows up as a result instead of killing or freezing pytest."""
from __future__ import annotations

import functools
import json
import os
import resource
import select
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHILD_MEMORY = 12 * 1024**3  # address space: TF and torch reserve a few GiB of it at import
QUIET = {"TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "0", "PYTHONWARNINGS": "ignore",
         "KERAS_BACKEND": "tensorflow", "OMP_NUM_THREADS": "1"}


def _limits(memory: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


class LoadWorker:
    """Loads artifacts in a child: load(path) -> {"ok": ...} | {"typed": ...} | {"crash": rc} | {"hang": s}.

    The child is `module` run as a script (tests/security/_worker.py, or the fuzzers' worker), with `env` added to
    this process's environment and `memory` bytes of address space."""

    def __init__(self, timeout: float = 60.0, module: str = "tests.security._worker",
                 env: dict[str, str] | None = None, memory: int = CHILD_MEMORY):
        self.timeout = timeout
        self.module, self.env, self.memory = module, env or {}, memory
        self.proc: subprocess.Popen | None = None
        self.restarts = 0

    def _start(self) -> None:
        env = {**os.environ, **QUIET, "PYTHONPATH": str(ROOT), **self.env}
        self.proc = subprocess.Popen([sys.executable, "-m", self.module], cwd=ROOT, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     preexec_fn=functools.partial(_limits, self.memory), text=True, bufsize=1)
        line = self._readline(120)
        assert line == "READY", f"worker {self.module} did not start: {line!r}"

    def _readline(self, timeout: float) -> str | None:
        assert self.proc is not None and self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            return None
        return self.proc.stdout.readline().strip()

    def load(self, path: str | Path, inspect: bool = True, feeds: list | None = None,
             timeout: float | None = None) -> dict:
        """One load in the child, bounded by `timeout` seconds (default: the worker's; a first load of a format
        imports its engine, which under a loaded machine takes longer than any load of a file)."""
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        assert self.proc is not None and self.proc.stdin is not None
        start = time.monotonic()
        self.proc.stdin.write(json.dumps({"path": str(path), "inspect": inspect, "feeds": feeds}) + "\n")
        self.proc.stdin.flush()
        line = self._readline(self.timeout if timeout is None else timeout)
        if line:
            return json.loads(line)
        if line is None:  # no answer in time: a hang
            self.close()
            self.restarts += 1
            return {"ok": False, "hang": round(time.monotonic() - start, 1)}
        rc = self.proc.wait(10)
        self.proc = None
        self.restarts += 1
        return {"ok": False, "crash": rc}

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None
