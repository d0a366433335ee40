"""Hostile .tflite files, checked before ai-edge-litert opens them in this process.

ai-edge-litert verifies the flatbuffer's layout but trusts its content: a SignatureDef naming subgraph 7
of 1, or an operator whose opcode was swapped (FULLY_CONNECTED -> SPLIT, SOFTMAX -> BATCH_MATMUL), crash
the process (SIGSEGV) in the interpreter's constructor or first invoke. Two defences, in this order:

1. `check_tflite` (modelkit.safety.tflite_check): a pure-Python, bounds-checked read of the flatbuffer (no
   TensorFlow) refusing, as a LoadError naming what is wrong: a missing "TFL3" identifier, any buffer /
   tensor / opcode / subgraph / signature index out of range, operator inputs and outputs that are not
   tensors of the subgraph (-1 only for optional inputs), input / output counts, index-input dtypes and
   options that do not fit the operator (a table of the ops converters emit), control flow naming missing
   subgraphs or itself, shapes with negative dims or rank > 16, constant data shorter than shape x dtype.
   External weight files (external buffer groups) are refused as UnsafeModelError.
2. `probe`: a validator cannot cover every native bug, so the first open of a file whose sha256 this
   machine has not seen happens in a sandboxed child (RLIMIT_AS, RLIMIT_CPU, a wall-clock timeout, no
   core file): the bytes go in on stdin, it builds the interpreter, reads the signatures, allocates and
   invokes once on zeros (again at batch 2 when the batch is dynamic). A child killed by a signal is an
   UnsafeModelError naming the signal; success is recorded under `$MODELKIT_CACHE_DIR/trust/tflite/`
   (modelkit.trust's store, with its ownership rules). Files modelkit's converter writes are recorded at
   write time (`record_known_good`), so they never pay for a probe.

`open_bytes(path)` does both and returns the bytes it checked: the engine opens exactly those (no window
in which the file could be swapped). MODELKIT_TFLITE_PROBE_TIMEOUT (s, default 120) and
MODELKIT_TFLITE_PROBE_MEMORY (bytes, default 2 GiB + 4x the file) tune the child's limits.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

from .. import trust
from ..errors import LoadError, ResourceError, UnsafeModelError
from .tflite_check import check_tflite

__all__ = ["check_tflite", "is_known", "open_bytes", "probe", "record_known_good", "store_dir"]

_MARK = "MODELKIT-PROBE "


def store_dir() -> Path:
    """Where the sha256 of .tflite files known not to crash the interpreter are recorded."""
    return trust.store_dir("tflite")


def is_known(digest: str) -> bool:
    return trust.is_recorded(digest, "tflite")


def _record(digest: str, path: Path, how: str) -> None:
    """Remember a file's sha256 as safe to open here; a cache that cannot be written only costs a probe."""
    try:
        trust.record(digest, path, "tflite", how)
    except OSError:
        pass


def record_known_good(path: str | os.PathLike) -> str:
    """For files modelkit's converter wrote on this machine: validated, then recorded without a probe."""
    p = Path(path)
    data = p.read_bytes()
    check_tflite(data, p)
    digest = hashlib.sha256(data).hexdigest()
    _record(digest, p, "written by modelkit convert")
    return digest


def open_bytes(path: str | os.PathLike) -> bytes:
    """The file's bytes once they are validated and known (or just probed) not to crash the interpreter."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise LoadError(f"{p}: cannot read this file: {exc.strerror or exc}") from exc
    check_tflite(data, p)
    digest = hashlib.sha256(data).hexdigest()
    if not is_known(digest) and probe(p, data):
        _record(digest, p, "probed in a sandboxed child")
    return data


def probe(path: Path, data: bytes) -> bool:
    """Open, allocate and invoke on zeros in a sandboxed child (modelkit/safety/_tflite_probe.py): True when all of
    it ran, False when the interpreter refused the file cleanly there (the engine raises that again, typed,
    in this process); a typed error when the child crashed, hung or ran out of memory."""
    memory = int(os.environ.get("MODELKIT_TFLITE_PROBE_MEMORY") or 2 * 1024**3 + 4 * len(data))
    timeout = float(os.environ.get("MODELKIT_TFLITE_PROBE_TIMEOUT") or 120)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "PYTHONWARNINGS": "ignore"}
    limits = f"memory limit {memory / 1024**3:.1f} GiB, {timeout:.0f} s"
    script = Path(__file__).with_name("_tflite_probe.py")
    try:  # -P: the current folder is not on the child's path; a new session: a terminal's Ctrl-C is not a crash
        proc = subprocess.run([sys.executable, "-P", str(script), str(memory), str(math.ceil(timeout))], input=data,
                              capture_output=True, timeout=timeout, env=env, start_new_session=True)
    except subprocess.TimeoutExpired:
        raise LoadError(f"{path}: the TFLite interpreter did not finish opening and running this file in "
                        f"{timeout:.0f} s in a sandboxed child process; refused (MODELKIT_TFLITE_PROBE_TIMEOUT "
                        "raises the limit)") from None
    except OSError as exc:
        raise LoadError(f"{path}: could not start the sandboxed first open of this file: {exc}") from exc
    lines = [x for x in proc.stdout.decode(errors="replace").splitlines() if x.startswith(_MARK)]
    result = json.loads(lines[-1][len(_MARK):]) if lines else None
    if proc.returncode < 0:
        sig = signal.Signals(-proc.returncode).name if -proc.returncode in signal.valid_signals() else proc.returncode
        if sig == "SIGXCPU":
            raise LoadError(f"{path}: the TFLite interpreter used more than {timeout:.0f} s of CPU opening this file "
                            "in a sandboxed child process; refused")
        if sig == "SIGKILL":  # not a crash: the kernel's OOM killer (or someone) killed the child
            raise ResourceError(f"{path}: the sandboxed child process opening this file was killed (SIGKILL), most "
                                f"likely for memory ({limits}); refused")
        raise UnsafeModelError(f"{path}: the TFLite interpreter (ai-edge-litert) crashed on this file ({sig}) when a "
                               f"sandboxed child process first opened it and ran it on zeros ({limits}); refused, so "
                               "it cannot crash this process")
    if result is None:
        tail = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise LoadError(f"{path}: the sandboxed first open of this file failed (exit {proc.returncode}): {tail[0]}")
    if result.get("memory"):
        raise ResourceError(f"{path}: the TFLite interpreter ran out of memory at '{result['stage']}' in a sandboxed "
                            f"child process ({limits}); MODELKIT_TFLITE_PROBE_MEMORY raises the limit")
    if not result.get("ok") and result.get("stage") == "import":  # nothing was probed: not a verdict on the file
        raise LoadError(f"{path}: the sandboxed first open of this file could not start ai-edge-litert ({limits}; "
                        f"MODELKIT_TFLITE_PROBE_MEMORY raises the memory limit): {result.get('error')}")
    return bool(result.get("ok"))
