"""Truncated, bit-flipped and random files of every format: `modelkit.load`, `modelkit inspect` and a
predict raise a typed error (FormatError / LoadError / UnsafeModelError) or work, and never crash or
hang. Every load runs in a LoadWorker child (RLIMIT_AS, a per-file time limit): a native crash there is
reported as {"crash": rc} and fails the test instead of killing pytest."""
from __future__ import annotations

import io
import json
import os
import random
import shutil
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# openvino: its graph (model.xml) damaged; openvino-bin: its weights (model.bin); executorch: a .pte program
FORMATS = ["onnx", "keras", "saved_model", "tflite", "torchscript", "pt2", "tvm", "openvino", "openvino-bin",
           "executorch"]
BUILT = ("tvm", "openvino", "openvino-bin", "executorch")  # converted by modelkit (conftest's *_artifact fixtures)
TYPED = {"FormatError", "LoadError", "UnsafeModelError", "ResourceError"}
FUZZ_EXAMPLES = int(os.environ.get("MODELKIT_FUZZ_EXAMPLES", "10"))  # per format; the slow run uses more
ENGINE_IMPORT = 300.0  # seconds for the first load of a format: its engine's import, slow on a loaded machine


def _source(fmt: str, artifacts, request) -> Path:
    if fmt in BUILT:
        return request.getfixturevalue(f"{fmt.split('-')[0]}_artifact")
    return artifacts[fmt]


def _copy(src: Path, folder: Path, fmt: str = "") -> tuple[Path, Path]:
    """Copy the artifact into folder; returns (path to load, file to corrupt)."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    if src.is_dir():
        dest = folder / src.name
        shutil.copytree(src, dest)
        if fmt.startswith("openvino"):
            return dest, dest / ("model.bin" if fmt == "openvino-bin" else "model.xml")
        return dest, dest / "saved_model.pb"
    dest = folder / src.name
    shutil.copy2(src, dest)
    manifest = src.with_name(src.name + ".modelkit.json")
    if manifest.exists():  # TVM libraries load only with their manifest
        shutil.copy2(manifest, folder / manifest.name)
    return dest, dest


def _check(result: dict, what: str) -> None:
    assert "crash" not in result, f"{what}: the engine crashed the process (exit {result['crash']})"
    assert "hang" not in result, f"{what}: no answer in {result['hang']} s"
    if not result["ok"]:
        assert result["typed"] and result["type"] in TYPED, f"{what}: untyped {result}"


def _mutations(size: int, seed: int) -> list[tuple[str, object]]:
    rng = random.Random(seed)
    out: list[tuple[str, object]] = [("truncate", n) for n in (0, 7, 16, size // 10, size // 2, size - 1)]
    out += [("flip", sorted(rng.sample(range(size), k))) for k in (1, 1, 4, 32)]
    out += [("random", 0), ("random", 64)]  # random bytes; random bytes after the format's first 64
    return out


def _apply(target: Path, original: bytes, kind: str, arg: object, seed: int = 0) -> None:
    data = bytearray(original)
    if kind == "truncate":
        data = data[: int(arg)]
    elif kind == "flip":
        for i in arg:
            data[i] ^= 1 << (i % 8)
    elif kind == "random":
        keep = min(int(arg), len(original))  # an OpenVINO .bin of a tiny model is under 64 bytes
        data = data[:keep] + bytearray(random.Random(seed).randbytes(len(original) - keep))
    elif kind == "splice":
        off, blob = arg
        data[off:off + len(blob)] = blob
    elif kind == "member":  # damage one member's content but keep the zip valid (CRCs match)
        index, off, blob = arg
        with zipfile.ZipFile(io.BytesIO(original)) as zin, zipfile.ZipFile(target, "w") as zout:
            for i, info in enumerate(zin.infolist()):
                body = bytearray(zin.read(info.filename))
                if i == index % len(zin.infolist()) and body:
                    at = off % len(body)
                    body[at:at + len(blob)] = blob
                    body = body[: max(1, len(body) - (blob[0] % 2) * (len(body) // 2))]  # sometimes truncate
                zout.writestr(info, bytes(body))
        return
    target.write_bytes(bytes(data))


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
def test_truncated_flipped_and_random_files_raise_typed_errors(fmt, artifacts, request, load_worker, tmp_path):
    src = _source(fmt, artifacts, request)
    path, target = _copy(src, tmp_path / "m", fmt)
    intact = load_worker.load(path, timeout=ENGINE_IMPORT)  # the format's engine imported here, once
    assert intact["ok"], f"the intact artifact must load: {intact}"
    original = target.read_bytes()
    failures = []
    for kind, arg in _mutations(len(original), seed=FORMATS.index(fmt)):
        _apply(target, original, kind, arg)
        result = load_worker.load(path)
        try:
            _check(result, f"{fmt} {kind} {arg if kind != 'flip' else len(arg)}")
        except AssertionError as exc:
            failures.append(str(exc))
    assert failures == []


@pytest.mark.parametrize("fmt", FORMATS)
def test_fuzzed_files_never_crash_or_hang(fmt, artifacts, request, load_worker, tmp_path_factory):
    src = _source(fmt, artifacts, request)
    path, target = _copy(src, tmp_path_factory.mktemp(f"fuzz_{fmt}") / "m", fmt)
    original = target.read_bytes()
    n = len(original)

    mutation = st.one_of(
        st.tuples(st.just("truncate"), st.integers(0, n - 1)),
        st.tuples(st.just("flip"), st.lists(st.integers(0, n - 1), min_size=1, max_size=64)),
        st.tuples(st.just("splice"), st.tuples(st.integers(0, n - 1), st.binary(min_size=1, max_size=16))),
        st.tuples(st.just("random"), st.integers(0, min(n, 256))),
        *([st.tuples(st.just("member"), st.tuples(st.integers(0, 64), st.integers(0, n),
                                                  st.binary(min_size=1, max_size=8)))] * 3
          if fmt in ("keras", "torchscript", "pt2") else []),
    )

    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(mutation, st.integers(0, 2**16))
    def fuzz(mut, seed):
        _apply(target, original, *mut, seed=seed)
        _check(load_worker.load(path), f"{fmt} {mut[0]} {json.dumps(mut[1], default=str)[:80]}")

    fuzz()


def test_files_of_the_wrong_kind_are_format_errors(tmp_path, load_worker):
    cases = {"empty.onnx": b"", "text.onnx": b"hello world, not a model\n", "zip.keras": b"PK\x03\x04" + b"\0" * 60,
             "elf.tvm.so": b"\x7fELF" + b"\0" * 60, "hdf5.h5": b"\x89HDF\r\n\x1a\n" + b"\0" * 60}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        result = load_worker.load(tmp_path / name)
        _check(result, name)
        assert not result["ok"], name
