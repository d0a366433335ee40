"""A MetaSchedule builder whose worker process lives across tuning batches.

TVM's LocalBuilder starts a fresh worker process for every batch (to bound a memory leak in long-lived
workers), and each fresh worker pays for importing TVM and its tensor intrinsics before its first
build: ~5 s per batch of 4 candidates whose builds take ~0.1 s each. This builder keeps one worker
and recycles it after a fixed number of builds instead, which bounds the leak the same way.
"""
from __future__ import annotations

import sys
from typing import Any

BUILDS_PER_WORKER = 64


def make_builder(ms: Any, timeout_s: float, link: tuple[str | None, str] | None = None) -> Any:
    """A PyBuilder building candidates one at a time in a reused, periodically recycled worker.

    link=None exports each candidate as TVM's tar of object files (the local runner links it here);
    link=(cxx, folder) links a shared library into folder with cxx (None: this machine's compiler), which
    a device's runtime-only RPC server loads as it is."""
    from tvm.ir.utils import derived_object
    from tvm.support.popen_pool import PopenPoolExecutor, StatusKind

    @derived_object
    class PersistentBuilder(ms.builder.PyBuilder):
        def __init__(self) -> None:
            super().__init__()
            self.pool = PopenPoolExecutor(max_workers=1, timeout=timeout_s, initializer=preload_tensor_intrinsics,
                                          maximum_process_uses=BUILDS_PER_WORKER)

        def build(self, build_inputs: list[Any]) -> list[Any]:
            results = []
            jobs = [(b.mod, b.target, link) for b in build_inputs]
            for r in self.pool.map_with_error_catching(build_one, jobs):
                if r.status == StatusKind.COMPLETE:
                    results.append(ms.builder.BuilderResult(r.value, None))
                elif r.status == StatusKind.TIMEOUT:
                    results.append(ms.builder.BuilderResult(None, f"build timed out after {timeout_s:.0f} s"))
                else:
                    results.append(ms.builder.BuilderResult(None, f"build failed: {r.value}"))
            return results

        def close(self) -> None:
            self.pool.shutdown()

    return PersistentBuilder()


def build_one(job: tuple[Any, Any, tuple[str | None, str] | None]) -> str:
    """In the worker: build one candidate module for its target and export it; return the artifact path."""
    import tempfile

    from tvm.s_tir.meta_schedule.builder.local_builder import default_build, default_export
    from tvm.support import cc

    mod, target, link = job
    built = default_build(mod, target, None)
    if link is None:
        return default_export(built)
    cxx, folder = link
    path = f"{tempfile.mkdtemp(dir=folder)}/candidate.so"
    built.export_library(path, **({"fcompile": cc.cross_compiler(cxx)} if cxx else {}))
    return path


def preload_tensor_intrinsics() -> None:
    """Import TVM's tensor intrinsics in ~2 s instead of ~25 s (here and in each builder worker).

    Every tuning context needs them, and so does the first build in each builder worker process.

    Each of their ~500 TVMScript functions calls inspect.stack(), and inspect.getmodule scans all of
    sys.modules for every frame whose file is not a module (``<frozen importlib._bootstrap>`` ...): ~28,000
    scans of ~2,500 modules. Those frames never map to a module, so the answer is memoized for the
    duration of this one import; every other lookup goes to inspect unchanged.
    """
    import inspect

    if "tvm.s_tir.tensor_intrin" in sys.modules:
        return
    original = inspect.getmodule
    pseudo: dict[str, Any] = {}

    def getmodule(obj: Any, _filename: str | None = None) -> Any:
        name = _filename or getattr(getattr(obj, "f_code", None), "co_filename", None)
        if name and name.startswith("<") and inspect.isframe(obj):
            if name not in pseudo:
                pseudo[name] = original(obj, _filename)
            return pseudo[name]
        return original(obj, _filename)

    inspect.getmodule = getmodule
    try:
        import tvm.s_tir.tensor_intrin  # noqa: F401
    finally:
        inspect.getmodule = original
