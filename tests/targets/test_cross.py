"""Cross-compilation: arm64 and armv7 libraries are real ELF files for their architecture; arm64 ones
also run under qemu-aarch64 when that environment is set up (python -m modelkit.targets.tvm.emulate setup)."""
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

import modelkit
from modelkit.errors import FormatError, LoadError, UnsupportedConversionError
from modelkit.targets.tvm import cross, emulate

pytest.importorskip("tvm")


def _need(compiler):
    if shutil.which(compiler) is None:
        pkgs = " ".join(cross.APT_PACKAGES[compiler])
        print(f"SKIP reason: {compiler} missing; apt-get install -y {pkgs}")
        pytest.skip(f"cross toolchain {compiler} not installed (apt-get install -y {pkgs})")


def test_elf_reader_on_known_files(tmp_path):
    host = cross.read_elf_header(Path(sys.executable).resolve())
    assert host["machine"] == cross.EM_X86_64 and host["bits"] == 64 and host["endian"] == "little"
    bad = tmp_path / "not.so"
    bad.write_bytes(b"PK\x03\x04" + b"\0" * 40)
    with pytest.raises(FormatError, match="not an ELF"):
        cross.read_elf_header(bad)


@pytest.mark.parametrize("target, machine, bits", [("edge-arm64", cross.EM_AARCH64, 64),
                                                   ("edge-armv7", cross.EM_ARM, 32)])
@pytest.mark.slow
def test_cross_compiled_library_is_elf_for_the_target(tiny_onnx, target, machine, bits):
    from modelkit.targets import compile, registry

    _need(registry.get(target).cross_compiler)
    result = compile(tiny_onnx, target=target)
    header = cross.read_elf_header(result.path)
    assert header["machine"] == machine and header["bits"] == bits and header["type"] == "shared"
    manifest = json.loads(Path(result.path + ".modelkit.json").read_text())
    assert manifest["target"] == target and manifest["extra"]["elf"]["machine"] == machine
    m = modelkit.load(result.path)  # loads for inspection; cannot run on x86-64
    assert m.signature.input_names == ["x"] and not m.runnable
    with pytest.raises(LoadError, match="built for"):
        m.predict(np.zeros((1, 4), np.float32))
    if target == "edge-armv7" or emulate.available() is not None:
        assert result.verified == "elf-architecture-only" and manifest["extra"]["not_run_because"]
    else:  # arm64 under qemu: a real parity report against onnxruntime
        assert result.verified == "parity-under-qemu-aarch64"
        assert result.parity["ok"] and result.parity["outputs"][0]["max_abs"] < 1e-5


def test_tuning_a_cross_target_is_refused(tiny_onnx):
    from modelkit.targets import compile

    _need("aarch64-linux-gnu-g++")
    with pytest.raises(UnsupportedConversionError, match="tuning measures candidates on this machine"):
        compile(tiny_onnx, target="edge-arm64", trials=4)


def test_missing_cross_compiler_is_named(tiny_onnx, monkeypatch):
    from modelkit.errors import EngineNotInstalledError
    from modelkit.targets import registry

    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(EngineNotInstalledError, match="g\\+\\+-aarch64-linux-gnu"):
        cross.compiler_for(registry.get("mobile-arm64"))
