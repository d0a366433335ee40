"""Structure-aware fuzzing (issue 16): .tflite files mutated through the flatbuffer schema (indices, opcodes,
options, shapes, dtypes, buffers, operator order) and .onnx files mutated through the protobuf (node
inputs, op types, attribute types and values, initializer dims / types / data, opsets, domains, node
order). Every mutant is loaded with `modelkit.load` AND predicted once on zeros, in a FuzzWorker child
under RLIMIT_AS and a per-file time limit; the child handles many files and is restarted after a crash.
Asserted: 0 crashes, 0 hangs, 0 untyped errors (typed: a modelkit.errors class).

CI runs 500 TFLite and 1,000 ONNX mutants (MODELKIT_STRUCT_FUZZ overrides both); the slow tests run 2,000
and 5,000 more with other seeds. The TFLite campaign uses its own cache folder, so every mutant that passes
the validator really goes through the sandboxed first open."""
from __future__ import annotations

import collections
import os
import time
from pathlib import Path

import pytest

from ._fuzz_worker import fuzz_worker
from ._mutate import build_rich_onnx, onnx_mutants, tflite_mutants
from ._tflite import tflite_models as build_tflite_models

CI_COUNT = {"tflite": 500, "onnx": 1000}  # MODELKIT_STRUCT_FUZZ overrides both
SLOW_COUNT = {"tflite": 2000, "onnx": 5000}
PER_FILE_S = 30.0  # an answer later than this is a hang
PROBE_S = "20"  # the sandboxed first open's own limit: a hanging interpreter is refused before PER_FILE_S


def _kind(result: dict) -> str:
    if result.get("ok"):
        return "ok"
    if "crash" in result:
        return "crash"
    if "hang" in result:
        return "hang"
    if not result.get("typed"):
        return "untyped"
    message = result["message"]
    if "sandboxed" in message:
        return "refused by the sandboxed first open"
    if "not a valid TFLite model" in message or "not a TFLite flatbuffer" in message:
        return "refused by the validator"
    return f"typed error from load or predict ({result['type']})"


def campaign(fmt: str, sources: list[bytes], count: int, seed: int, folder: Path) -> dict:
    """Load and predict `count` mutants (round robin over sources) in one FuzzWorker; a summary."""
    folder.mkdir(parents=True, exist_ok=True)
    env = {"MODELKIT_CACHE_DIR": str(folder / "cache"), "MODELKIT_TFLITE_PROBE_TIMEOUT": PROBE_S}
    gens = [(tflite_mutants if fmt == "tflite" else onnx_mutants)(src, count // len(sources) + 1, seed * 10 + i)
            for i, src in enumerate(sources)]
    worker = fuzz_worker(env, PER_FILE_S)
    kinds: collections.Counter = collections.Counter()
    bad: list[str] = []
    sandboxed: list[str] = []
    start = time.monotonic()
    try:
        for n in range(count):
            desc, data = next(gens[n % len(gens)])
            path = folder / f"m.{fmt}"
            path.write_bytes(data)
            result = worker.load(path)
            kind = _kind(result)
            kinds[kind] += 1
            if kind == "refused by the sandboxed first open":  # the validator missed it; worth a look
                sandboxed.append(f"{desc}: {result['message'][-160:]}")
                (folder / f"sandboxed_{len(sandboxed)}.{fmt}").write_bytes(data)
            if kind in ("crash", "hang", "untyped"):
                keep = folder / f"failure_{len(bad)}.{fmt}"
                keep.write_bytes(data)
                bad.append(f"{desc} -> {kind}: {result.get('type', '')} {result.get('message', result)} "
                           f"(kept as {keep})\n{result.get('traceback', '')}")
    finally:
        worker.close()
    seconds = time.monotonic() - start
    print(f"\n{fmt}: {count} mutants in {seconds:.1f} s, {worker.restarts} worker restarts: {dict(kinds)}")
    for line in sandboxed[:5]:
        print(f"  refused only by the sandboxed first open: {line}")
    return {"kinds": kinds, "bad": bad, "seconds": seconds}


def _sources(fmt: str, models: dict[str, Path], folder: Path) -> list[bytes]:
    if fmt == "tflite":
        return [models[k].read_bytes() for k in ("rich", "control_flow", "tiny")]
    from tests.helpers import make_tiny_onnx

    return [build_rich_onnx(folder / "rich.onnx").read_bytes(), make_tiny_onnx(folder / "tiny.onnx").read_bytes()]


def _check(report: dict) -> None:
    kinds = report["kinds"]
    assert kinds["crash"] == 0 and kinds["hang"] == 0 and kinds["untyped"] == 0, "\n\n".join(report["bad"][:10])
    assert kinds["ok"] > 0, "no mutant loaded and predicted: the mutations are too destructive to test anything"


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_structured_fuzz_no_crash_hang_or_untyped_error(fmt, tmp_path_factory, tmp_path):
    pytest.importorskip("ai_edge_litert" if fmt == "tflite" else "onnxruntime")
    models = build_tflite_models(tmp_path_factory) if fmt == "tflite" else {}
    count = int(os.environ.get("MODELKIT_STRUCT_FUZZ") or CI_COUNT[fmt])
    _check(campaign(fmt, _sources(fmt, models, tmp_path), count, seed=1, folder=tmp_path / "fuzz"))


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_structured_fuzz_long(fmt, tmp_path_factory, tmp_path):
    pytest.importorskip("ai_edge_litert" if fmt == "tflite" else "onnxruntime")
    models = build_tflite_models(tmp_path_factory) if fmt == "tflite" else {}
    _check(campaign(fmt, _sources(fmt, models, tmp_path), SLOW_COUNT[fmt], seed=2, folder=tmp_path / "fuzz"))
