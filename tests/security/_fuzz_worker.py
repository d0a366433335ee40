"""The fuzzers' LoadWorker (tests/helpers/load.py): this module run as a script, with
its own environment (a private MODELKIT_CACHE_DIR, the sandboxed first open's time limit) and a 4 GiB
address space. Child side: one JSON request a line ({"path", "inspect"}), `modelkit inspect`'s describe when
asked, `modelkit.load` and one predict on zeros, one JSON answer a line. Unlike _worker, inputs the harness
would need more than 64 MiB to build (a mutated dim of 2**40) are not built: predict is then called with a
small wrong-shaped input, which must be refused with a typed error."""
from __future__ import annotations

import numpy as np

from tests.security._worker import failure, main

MAX_INPUT_BYTES = 64 << 20
CHILD_MEMORY = 4 * 1024**3  # numpy, onnxruntime, ai-edge-litert and modelkit fit in it


def fuzz_worker(env: dict[str, str], timeout: float = 30.0):
    """A LoadWorker running this module; load(path, inspect=...) -> {"ok"} | {"typed"} | {"crash"} | {"hang"}."""
    from tests.helpers.load import LoadWorker

    return LoadWorker(timeout, module="tests.security._fuzz_worker", env=env, memory=CHILD_MEMORY)


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
    except BaseException as exc:  # noqa: BLE001 - the point: report what escaped untyped
        return failure(exc, ModelkitError, message=400, tb=3000)


if __name__ == "__main__":
    main(handle)
