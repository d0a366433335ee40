"""ONNX external data that leaves the model's folder, and archives whose members escape or are links:
refused (UnsafeModelError naming the reason) before onnxruntime, TVM or the file system sees them."""
from __future__ import annotations

import io
import os
import tarfile
import zipfile
from pathlib import Path

import pytest

import modelkit
from modelkit.cli.inspect import describe
from modelkit.errors import LoadError, UnsafeModelError
from modelkit.safety import check_onnx_external_data
from modelkit.safety.archive import safe_extract

from ._build import build_onnx


def _external(folder: Path, location: str) -> Path:
    """tiny.onnx with its weight W stored as external data at `location` (written as given)."""
    import onnx

    folder.mkdir(parents=True, exist_ok=True)
    src = build_onnx(folder / "src.onnx")
    model = onnx.load(str(src))
    onnx.save_model(model, str(folder / "m.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    model = onnx.load(str(folder / "m.onnx"), load_external_data=False)
    for t in model.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = location
    path = folder / "model.onnx"
    onnx.save(model, str(path))
    (folder / "m.onnx").unlink()
    return path


def test_external_data_inside_the_folder_loads(tmp_path):
    import numpy as np

    path = _external(tmp_path, "weights.bin")
    check_onnx_external_data(path)
    assert modelkit.load(path).predict(np.ones((1, 4), np.float32))["probs"].shape == (1, 3)


@pytest.mark.parametrize("case", ["absolute", "dotdot", "symlink", "hardlink", "symlinked_dir"])
def test_external_data_escaping_the_folder_is_refused(tmp_path, case):
    secret = tmp_path / "secret" / "weights.bin"
    secret.parent.mkdir()
    folder = tmp_path / "model"
    path = _external(folder, "weights.bin")
    os.replace(folder / "weights.bin", secret)
    if case == "absolute":
        path, why = _external(folder, str(secret)), "absolute location"
    elif case == "dotdot":
        path, why = _external(folder, "../secret/weights.bin"), "contains '..'"
    elif case == "symlink":
        (folder / "weights.bin").symlink_to(secret)
        why = "goes through a symlink"
    elif case == "hardlink":
        os.link(secret, folder / "weights.bin")
        why = "is a hard link"
    else:
        (folder / "sub").symlink_to(secret.parent)
        path, why = _external(folder, "sub/weights.bin"), "goes through a symlink"
    for attempt in (lambda: modelkit.load(path), lambda: describe(str(path)), lambda: check_onnx_external_data(path)):
        with pytest.raises(UnsafeModelError, match=f"external data of tensor 'W'.*{why}"):
            attempt()


def test_tvm_compile_checks_external_data_first(tmp_path):
    pytest.importorskip("tvm")
    secret = tmp_path / "secret.bin"
    path = _external(tmp_path / "m", "weights.bin")
    os.replace(tmp_path / "m" / "weights.bin", secret)
    path = _external(tmp_path / "m", str(secret))
    with pytest.raises(UnsafeModelError, match="absolute location"):
        modelkit.convert(path, "tvm", out_dir=tmp_path / "out")
    assert not (tmp_path / "out" / "model.tvm.so").exists()


def test_corrupt_onnx_is_a_load_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07\x12\x04junk" + b"\xff" * 40)
    with pytest.raises(LoadError, match="not a readable ONNX model"):
        modelkit.load(bad)


# ------------------------------------------------------------------------------------------- archives

def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _link(name: str, target: str, kind: bytes) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def test_good_archives_extract(tmp_path):
    tgz = _tar(tmp_path / "ok.tar.gz", [_file("model/1/model.onnx", b"abc"), _file("config.pbtxt", b"c")])
    out = safe_extract(tgz, tmp_path / "x")
    assert (out / "model" / "1" / "model.onnx").read_bytes() == b"abc"
    mar = tmp_path / "ok.mar"
    with zipfile.ZipFile(mar, "w") as zf:
        zf.writestr("MAR-INF/MANIFEST.json", "{}")
        zf.writestr("model.pt", b"pt")
    assert (safe_extract(mar, tmp_path / "y") / "MAR-INF" / "MANIFEST.json").read_text() == "{}"


@pytest.mark.parametrize("member, why", [
    (_file("../escape.txt"), r"'\.\./escape\.txt' contains '\.\.'"),
    (_file("a/../../escape.txt"), r"contains '\.\.'"),
    (_file("/tmp/abs_escape.txt"), "absolute path"),
    (_link("model/link", "/etc/passwd", tarfile.SYMTYPE), r"'model/link' is a symbolic link \(to '/etc/passwd'\)"),
    (_link("model/hard", "/etc/passwd", tarfile.LNKTYPE), "is a hard link"),
    (_link("model/fifo", "", tarfile.FIFOTYPE), "not a plain file or folder"),
    (_link("model/dev", "", tarfile.CHRTYPE), "not a plain file or folder"),
])
def test_tar_members_escaping_or_linking_are_refused_and_nothing_is_written(tmp_path, member, why):
    tgz = _tar(tmp_path / "evil.tar.gz", [_file("model/ok.txt"), member])
    dest = tmp_path / "dest" / "inner"
    with pytest.raises(UnsafeModelError, match=why):
        safe_extract(tgz, dest)
    assert list(dest.iterdir()) == []  # checked before anything was written
    assert not (tmp_path / "dest" / "escape.txt").exists() and not Path("/tmp/abs_escape.txt").exists()


@pytest.mark.parametrize("name, mode, why", [
    ("../escape.txt", 0o100644, r"contains '\.\.'"),
    ("/abs.txt", 0o100644, "absolute path"),
    ("C:/win.txt", 0o100644, "absolute path"),
    ("MAR-INF/link", 0o120777, "is a symbolic link"),
])
def test_zip_and_mar_members_escaping_or_linking_are_refused(tmp_path, name, mode, why):
    mar = tmp_path / "evil.mar"
    with zipfile.ZipFile(mar, "w") as zf:
        zf.writestr("MAR-INF/MANIFEST.json", "{}")
        info = zipfile.ZipInfo(name)
        info.external_attr = mode << 16
        zf.writestr(info, b"/etc/passwd")
    dest = tmp_path / "dest"
    with pytest.raises(UnsafeModelError, match=why):
        safe_extract(mar, dest)
    assert list(dest.iterdir()) == []


def test_damaged_archives_are_load_errors(tmp_path):
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"\x1f\x8b" + os.urandom(100))
    with pytest.raises(LoadError, match="not a readable tar or zip archive"):
        safe_extract(bad, tmp_path / "d")
