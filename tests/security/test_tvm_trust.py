"""TVM libraries are native code (issue 16, item 2). A shared object whose constructor writes a canary,
with a manifest whose sha256 matches it, used to load, and the first predict (or `modelkit serve`'s
warm-up) dlopen'ed it. Now only libraries this machine compiled (the local trust store, by content)
load; anything else needs trust_unsafe_code=True / --trust-unsafe-code."""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

import modelkit
from modelkit import manifest as _manifest
from modelkit.errors import UnsafeModelError

from ._build import SIG, expected
from ._hostile import in_child

pytest.importorskip("tvm")
CC = shutil.which("gcc") or shutil.which("cc")
REFUSED = r"refused to load: a TVM library is native code .* this machine did not compile it .*--trust-unsafe-code"


def _constructor_library(folder: Path, canary: Path) -> Path:
    """A real shared object whose constructor writes the canary when dlopen maps it, with a manifest
    that describes it exactly (format, signature, sha256)."""
    if CC is None:
        pytest.skip("no C compiler to build the hostile library")
    folder.mkdir(parents=True, exist_ok=True)
    src = folder / "payload.c"
    src.write_text('#include <stdio.h>\n__attribute__((constructor)) static void payload(void) {\n'
                   f'  FILE *f = fopen("{canary}", "w"); if (f) {{ fputs("ran", f); fclose(f); }}\n}}\n')
    lib = folder / "evil.tvm.so"
    subprocess.run([CC, "-shared", "-fPIC", "-o", str(lib), str(src)], check=True, capture_output=True)
    _manifest.write(lib, _manifest.Manifest(format="tvm", signature=SIG, target="server-cpu",
                                            extra={"device": "cpu", "arch": "x86_64"}))
    assert _manifest.read(lib).sha256 == _manifest.sha256_of(lib)  # the manifest vouches for it
    return lib


@pytest.fixture
def store(tmp_path, monkeypatch) -> Path:
    """An empty trust store for this test (MODELKIT_CACHE_DIR, also seen by children and servers)."""
    monkeypatch.setenv("MODELKIT_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_library_with_a_matching_manifest_is_refused_before_dlopen(tmp_path, store):
    from modelkit.cli.inspect import describe

    canary = tmp_path / "canary"
    lib = _constructor_library(tmp_path / "lib", canary)
    with pytest.raises(UnsafeModelError, match=REFUSED):
        modelkit.load(lib)
    assert describe(str(lib))["format"] == "tvm"  # inspect reads the manifest, never the library
    assert not canary.exists()
    # the flag lifts it: the same library now loads, and its constructor runs at the first predict
    proc = in_child("import modelkit, numpy as np\n"
                    f"m = modelkit.load({str(lib)!r}, trust_unsafe_code=True)\n"
                    "try:\n    m.predict(np.zeros((1, 4), np.float32))\nexcept Exception as e:\n"
                    "    print(type(e).__name__)\n")
    assert proc.returncode == 0, proc.stderr[-800:]
    assert canary.exists(), "with --trust-unsafe-code the library is dlopen'ed"


def _wait_for(predicate, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.slow
def test_serve_refuses_it_at_warm_up_and_the_flag_lifts_it(tmp_path, store, serve):
    canary = tmp_path / "canary"
    lib = _constructor_library(tmp_path / "lib", canary)
    server = serve(f"evil={lib}", ready=False)
    assert _wait_for(lambda: "failed to load" in server.text(), 60), server.text()
    assert "UnsafeModelError" in server.text() and "did not compile it" in server.text()
    assert not canary.exists()
    server.stop()
    trusting = serve(f"evil={lib}", "--trust-unsafe-code", ready=False)
    assert _wait_for(canary.exists, 60), trusting.text()  # warm-up dlopen'ed it


def test_a_library_compiled_here_loads_copied_or_renamed(tvm_artifact, tmp_path, monkeypatch):
    from modelkit import trust

    digest = _manifest.sha256_of(tvm_artifact)
    assert trust.is_trusted(digest), "modelkit convert --to tvm records what it compiles"
    entry = trust.store_dir() / f"{digest}.json"
    assert stat.S_IMODE(entry.stat().st_mode) == 0o600 and stat.S_IMODE(trust.store_dir().stat().st_mode) == 0o700
    copy = tmp_path / "copied" / "renamed.tvm.so"
    copy.parent.mkdir()
    shutil.copy2(tvm_artifact, copy)
    shutil.copy2(_manifest.manifest_path(tvm_artifact), _manifest.manifest_path(copy))
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    np.testing.assert_allclose(modelkit.load(copy).predict({"x": x})["probs"], expected(x), atol=1e-5)
    # a modified library with a manifest rewritten to match it is no longer the library compiled here
    data = bytearray(copy.read_bytes())
    data[-1] ^= 0xFF
    copy.unlink()  # a new file: this process has the old one mapped, and rewriting it in place crashes at exit
    copy.write_bytes(bytes(data))
    m = _manifest.read(copy)
    _manifest.write(copy, m)
    with pytest.raises(UnsafeModelError, match=REFUSED):
        modelkit.load(copy)
    # another user's store (another cache folder) does not trust it either; the flag does
    monkeypatch.setenv("MODELKIT_CACHE_DIR", str(tmp_path / "elsewhere"))
    with pytest.raises(UnsafeModelError, match=REFUSED):
        modelkit.load(tvm_artifact)
    np.testing.assert_allclose(modelkit.load(tvm_artifact, trust_unsafe_code=True).predict({"x": x})["probs"],
                               expected(x), atol=1e-5)


def test_store_entries_others_could_write_do_not_count(tmp_path, store):
    from modelkit import trust

    lib = tmp_path / "x.so"
    lib.write_bytes(b"\x7fELF not really")
    digest = trust.record_library(lib)
    assert trust.is_trusted(digest)
    entry = trust.store_dir() / f"{digest}.json"
    os.chmod(entry, 0o666)
    assert not trust.is_trusted(digest)
    os.chmod(entry, 0o600)
    os.chmod(trust.store_dir(), 0o777)
    assert not trust.is_trusted(digest)
    os.chmod(trust.store_dir(), 0o700)
    assert trust.is_trusted(digest) and not trust.is_trusted("0" * 64) and not trust.is_trusted("../x")
