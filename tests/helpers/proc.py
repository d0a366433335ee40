"""Stopping a server started in its own process group (TorchServe: launcher, java, workers)."""
from __future__ import annotations

import os
import signal
import subprocess
import time


def stop_group(proc: subprocess.Popen, grace_s: float = 30.0) -> None:
    """SIGTERM the process group led by `proc`; SIGKILL whatever is left after `grace_s` seconds."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        end = time.monotonic() + grace_s
        while time.monotonic() < end:
            proc.poll()
            os.killpg(proc.pid, 0)  # raises once every process of the group is gone
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(10)
