"""The calling thread's alternate signal stack (Linux): where a signal handler installed with SA_ONSTACK, as
Python's are, runs. A library that leaves it pointing at freed memory makes the next signal (Ctrl-C, SIGTERM) a
SIGSEGV that even faulthandler cannot report; `freed_signal_stack()` finds that before a signal does."""
from __future__ import annotations

import ctypes
import sys

SS_DISABLE = 2


class _StackT(ctypes.Structure):  # stack_t on Linux (x86_64 and aarch64)
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


def freed_signal_stack() -> str | None:
    """None when this thread has no alternate signal stack or it lies in mapped memory (or off Linux);
    else a line saying where it points."""
    if not sys.platform.startswith("linux"):
        return None
    stack = _StackT()
    if ctypes.CDLL(None).sigaltstack(None, ctypes.byref(stack)) != 0 or stack.ss_flags & SS_DISABLE:
        return None
    low, high = stack.ss_sp or 0, (stack.ss_sp or 0) + stack.ss_size
    with open("/proc/self/maps") as maps:
        spans = [tuple(int(a, 16) for a in line.split()[0].split("-")) for line in maps]
    if all(any(start <= at < end for start, end in spans) for at in (low, high - 1)):  # both ends: maps may abut
        return None
    return f"the alternate signal stack {low:#x}..{high:#x} is not mapped memory (freed)"
