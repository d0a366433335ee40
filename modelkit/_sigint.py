"""Ctrl-C handled by the work instead of raised where it lands.

Long work whose native code a KeyboardInterrupt must not land in (TensorFlow's tensor conversion crashed with
SIGSEGV; TVM's tuner would lose the batch being measured) installs its own SIGINT handler for its duration: the
first Ctrl-C asks it to stop at its next safe point, a second raises KeyboardInterrupt. Training
(modelkit.core.interrupt) and TVM tuning (modelkit.targets.tvm.scheduler) both go through `handling`.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any


@contextlib.contextmanager
def handling(handler: Callable[[int, Any], None]) -> Iterator[bool]:
    """`handler` for SIGINT while the block runs, the handler before it put back after; yields whether it was
    installed. Main thread only (signals are delivered there), and a SIGINT the launcher ignored (nohup, some CI
    runners) stays ignored."""
    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        yield False
        return
    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield True
    finally:
        signal.signal(signal.SIGINT, previous)
