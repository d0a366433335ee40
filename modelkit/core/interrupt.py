"""Ctrl-C during training, taken where the training loop can stop cleanly.

Python raises KeyboardInterrupt wherever the main thread is when SIGINT arrives. Raised inside TensorFlow's
conversion of a Python sequence to a tensor (Keras resets its metrics that way as each epoch starts), it crashed
the process with SIGSEGV (TensorFlow 2.21: about one Ctrl-C in ten in `modelkit train`, the checkpoint lost).
While `deferred(keras)` is active, the first Ctrl-C only records the request and says so; the Keras callback it
yields raises KeyboardInterrupt at the next batch or epoch boundary, in Python, and leaving the block raises it if
the request came after the last one. A second Ctrl-C raises at once (the user insists).

Only Python's own handler is replaced, and only in the main thread: a handler the user installed, an ignored
SIGINT (a background job) or training in another thread keep today's behaviour.
"""
from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

NOTICE = ("[modelkit] Ctrl-C: stopping at the end of this batch to save a checkpoint "
          "(Ctrl-C again to stop at once)")


@contextlib.contextmanager
def deferred(keras: Any) -> Iterator[Any]:
    """Take Ctrl-C at the training loop's next boundary; yields the Keras callback to pass to fit()."""
    requested: list[bool] = []

    def on_sigint(signum: int, frame: Any) -> None:
        if requested:
            raise KeyboardInterrupt
        requested.append(True)
        print(NOTICE, file=sys.stderr, flush=True)

    def stop_if_requested(*args: Any, **kwargs: Any) -> None:
        if requested:
            raise KeyboardInterrupt

    class StopOnCtrlC(keras.callbacks.Callback):
        on_train_batch_end = on_test_batch_end = on_epoch_begin = on_epoch_end = staticmethod(stop_if_requested)

    ours = threading.current_thread() is threading.main_thread() \
        and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    before = signal.signal(signal.SIGINT, on_sigint) if ours else None
    try:
        yield StopOnCtrlC()
    finally:
        if ours:
            signal.signal(signal.SIGINT, before)
    stop_if_requested()
