"""modelkit.optimization.cache: measurement keys, atomic JSON records, corrupt files as misses."""
from __future__ import annotations

import json

import numpy as np
import pytest

from modelkit.optimization import cache

SHA = "a" * 64
DATA = "d" * 64
CPUINFO = """processor\t: 0
model name\t: Test CPU 9000
physical id\t: 0
core id\t: 0

processor\t: 1
model name\t: Test CPU 9000
physical id\t: 0
core id\t: 1
"""
MEASURED = {"status": "measured", "p50_ms": 1.25, "p99_ms": 2.5, "ci95_ms": [1.2, 1.3], "rounds_ms": [1.2, 1.3],
            "calls": 200, "accuracy": 0.97, "load_s": 0.4, "batch": 1}


@pytest.fixture(autouse=True)
def _cpu(monkeypatch):
    monkeypatch.setattr(cache, "_cpuinfo_text", lambda: CPUINFO)


def key(**kw):
    args = {"artifact_sha256": SHA, "threads": 2, "batch": 1, "data_sha256": DATA, "mode": "run"}
    args.update(kw)
    return cache.measurement_key(**args)


def test_hit_after_store_in_cache_dir(tmp_path):
    k = key()
    assert cache.lookup(k, tmp_path) is None
    assert cache.store(k, MEASURED, tmp_path) is True
    assert cache.lookup(k, tmp_path) == MEASURED
    assert [p.name for p in tmp_path.iterdir()] == [f"{k}.json"]  # nothing left beside it


def test_default_folder_is_under_the_modelkit_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELKIT_CACHE_DIR", str(tmp_path))
    k = key()
    cache.store(k, MEASURED)
    assert (tmp_path / "optimize" / "measured" / f"{k}.json").is_file()
    assert cache.lookup(k) == MEASURED


def test_numpy_values_are_stored_as_numbers(tmp_path):
    k = key()
    cache.store(k, {"p50_ms": np.float32(1.5), "rounds_ms": np.array([1.0, 2.0]), "calls": np.int64(7)}, tmp_path)
    assert cache.lookup(k, tmp_path) == {"p50_ms": 1.5, "rounds_ms": [1.0, 2.0], "calls": 7}


@pytest.mark.parametrize("change", [{"threads": 1}, {"batch": 8}, {"data_sha256": "e" * 64}, {"data_sha256": None},
                                    {"artifact_sha256": "b" * 64}, {"mode": "keras.predict"},
                                    {"extra": {"onnxruntime": "1.20"}}])
def test_a_changed_input_is_a_miss(tmp_path, change):
    cache.store(key(), MEASURED, tmp_path)
    k2 = key(**change)
    assert k2 != key()
    assert cache.lookup(k2, tmp_path) is None


def test_key_differs_across_machines(monkeypatch):
    k = key()
    monkeypatch.setattr(cache, "_cpuinfo_text", lambda: CPUINFO.replace("Test CPU 9000", "Other CPU 1"))
    assert key() != k
    one_cpu = CPUINFO.split("\n\n")[0] + "\n"
    monkeypatch.setattr(cache, "_cpuinfo_text", lambda: one_cpu)
    assert key() != k
    monkeypatch.setattr(cache, "_cpuinfo_text", lambda: CPUINFO)
    assert key() == k


def test_key_differs_across_modelkit_versions(monkeypatch):
    import modelkit

    k = key()
    monkeypatch.setattr(modelkit, "__version__", "9.9.9")
    assert key() != k


@pytest.mark.parametrize("content", [b"", b'{"format": 1, "key": "', b"\xff\xfe not utf-8", b"[1, 2]", b"null",
                                     b'{"format": 1, "key": "KEY", "measurement": 3}'])
def test_corrupt_or_partial_file_is_a_miss(tmp_path, content):
    k = key()
    (tmp_path / f"{k}.json").write_bytes(content.replace(b"KEY", k.encode()))
    assert cache.lookup(k, tmp_path) is None
    cache.store(k, MEASURED, tmp_path)  # and a store repairs it
    assert cache.lookup(k, tmp_path) == MEASURED


def test_a_record_stored_under_another_key_is_a_miss(tmp_path):
    k, other = key(), key(threads=4)
    cache.store(other, MEASURED, tmp_path)
    (tmp_path / f"{other}.json").rename(tmp_path / f"{k}.json")
    assert cache.lookup(k, tmp_path) is None


def test_bad_keys(tmp_path):
    assert cache.lookup("../../etc/passwd", tmp_path) is None
    with pytest.raises(ValueError, match="not a cache key"):
        cache.store("../x", MEASURED, tmp_path)


def test_unwritable_cache_folder_is_not_an_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert cache.store(key(), MEASURED, blocker / "measured") is False


def test_build_key_covers_its_inputs():
    base = dict(source_sha256=SHA, target="server-cpu", fmt="onnx", quantize=None, gate={"rtol": 1e-3})
    k = cache.build_key(**base)
    assert len(k) == 64 and k == cache.build_key(**base)
    for change in ({"target": "edge-arm64"}, {"fmt": "tflite"}, {"quantize": "int8"}, {"gate": {"rtol": 1e-2}},
                   {"source_sha256": "b" * 64}):
        assert cache.build_key(**{**base, **change}) != k
    assert json.dumps(k)  # a plain string
