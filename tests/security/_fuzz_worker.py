"""FuzzWorker: a LoadWorker (tests/helpers/load.py) whose child is this module run as a script, with
its own environment (a private MODELKIT_CACHE_DIR, the sandboxed first open's time limit) and a 4 GiB
address space. Child side: one JSON request a line ({"path", "inspect"}), `modelkit inspect`'s describe when
asked, `modelkit.load` and one predict on zeros, one JSON answer a line. Unlike _worker, inputs the harness
would need more than 64 MiB to build (a mutated dim of 2**40) are not built: predict is then called with a
small wrong-shaped input, which must be refused with a typed error."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback

import numpy as np

MAX_INPUT_BYTES = 64 << 20
CHILD_MEMORY = 4 * 1024**3  # numpy, onnxruntime, ai-edge-litert and modelkit fit in it


def _limits() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY, CHILD_MEMORY))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def fuzz_worker(env: dict[str, str], timeout: float = 30.0):
    """A LoadWorker running this module; load(path, inspect=...) -> {"ok"} | {"typed"} | {"crash"} | {"hang"}."""
    from tests.helpers.load import QUIET, ROOT, LoadWorker

    class FuzzWorker(LoadWorker):
        def _start(self) -> None:
            self.proc = subprocess.Popen([sys.executable, "-m", "tests.security._fuzz_worker"], cwd=ROOT,
                                         env={**os.environ, **QUIET, "PYTHONPATH": str(ROOT), **env},
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                         preexec_fn=_limits, text=True, bufsize=1)
            line = self._readline(120)
            assert line == "READY", f"fuzz worker did not start: {line!r}"

    return FuzzWorker(timeout)


def handle(req: dict) -> dict:
    import modelkit
    from modelkit.errors import ModelkitError

    try:
        if req.get("inspect"):
            from modelkit.cli.inspect import describe

            describe(req["path"])
        m = modelkit.load(req["path"])
        shapes = {s.name: s.concrete_shape(1, 2) for s in m.signature.inputs}
        big = any(int(np.prod(shape, dtype=np.float64)) * np.dtype(s.dtype).itemsize > MAX_INPUT_BYTES
                  for s, shape in zip(m.signature.inputs, shapes.values()))
        if big:
            inputs = {s.name: np.zeros((1,) * max(len(s.shape), 1), s.dtype) for s in m.signature.inputs}
        else:
            inputs = {s.name: np.zeros(shapes[s.name], s.dtype) for s in m.signature.inputs}
        m.predict(inputs)
        return {"ok": True, "big": big}
    except ModelkitError as exc:
        return {"ok": False, "typed": True, "type": type(exc).__name__, "message": str(exc)[:400]}
    except BaseException as exc:  # noqa: BLE001 - the point: report what escaped untyped
        return {"ok": False, "typed": False, "type": type(exc).__name__, "message": str(exc)[:400],
                "traceback": traceback.format_exc()[-3000:]}


def main() -> None:
    out = sys.stdout
    sys.stdout = sys.stderr  # engines' chatter must not corrupt the protocol
    print("READY", file=out, flush=True)
    for line in sys.stdin:
        out.write(json.dumps(handle(json.loads(line))) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
