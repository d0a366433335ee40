"""User mistakes on the CLI are one line `error: ...` and exit code 2: input files whose headers lie,
outputs that cannot be created, manifests of the wrong shape."""
from __future__ import annotations

import errno
import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from numpy.lib import format as npformat

import modelkit
from modelkit.cli import main
from tests.helpers import make_tiny_keras
from tests.helpers.cli import one_line_error


def _npy_bytes(header: dict, data: bytes) -> bytes:
    buf = io.BytesIO()
    npformat.write_array_header_1_0(buf, header)
    return buf.getvalue() + data


def _huge_header_npy() -> bytes:
    """300 bytes whose header claims a (2**34, 64) float32 array: 4 TiB."""
    body = _npy_bytes({"descr": "<f4", "fortran_order": False, "shape": (2**34, 64)}, b"")
    return body + b"\0" * (300 - len(body))


@pytest.fixture
def x_npy(tmp_path: Path) -> Path:
    np.save(tmp_path / "x.npy", np.arange(8, dtype=np.float32).reshape(2, 4))
    return tmp_path / "x.npy"


# ---- inputs: headers are checked before anything is allocated ----

@pytest.mark.parametrize("kind", ["npz", "npy"])
def test_run_refuses_a_header_claiming_4_tib_before_allocating(tiny_onnx: Path, tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"bomb.{kind}"
    if kind == "npz":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("x.npy", _huge_header_npy())
    else:
        path.write_bytes(_huge_header_npy())
    line = one_line_error(["run", str(tiny_onnx), "--input", str(path)])
    member = " member 'x.npy':" if kind == "npz" else ""
    assert line == (f"error: {path}:{member} its header claims shape (17179869184, 64) of float32, 4398046511104 "
                    "bytes, more than the limit of 4294967296 (MODELKIT_MAX_INPUT_BYTES)")


def _write_zip(path: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def _corrupt_deflate(path: Path) -> Path:
    buf = io.BytesIO()
    np.savez_compressed(buf, x=np.arange(4000, dtype=np.float32).reshape(1000, 4))
    raw = bytearray(buf.getvalue())
    raw[60:90] = bytes(30)  # inside the compressed stream of x.npy
    path.write_bytes(bytes(raw))
    return path


HEADER = {"descr": "<f4", "fortran_order": False, "shape": (2, 4)}
BAD_INPUTS = {
    "truncated.npy": (lambda p: p.write_bytes(_npy_bytes(HEADER, bytes(29))),
                      "its header claims shape (2, 4) of float32 (32 bytes) but it holds 29 bytes of data"),
    "longer.npy": (lambda p: p.write_bytes(_npy_bytes(HEADER, bytes(40))),
                   "its header claims shape (2, 4) of float32 (32 bytes) but it holds 40 bytes of data"),
    "member_size.npz": (lambda p: _write_zip(p, {"x.npy": _npy_bytes(HEADER, bytes(8))}),
                        "member 'x.npy': its header claims shape (2, 4) of float32 (32 bytes) but it holds 8 bytes"),
    "corrupt.npz": (_corrupt_deflate, "member 'x.npy': "),
    "not_npy_member.npz": (lambda p: _write_zip(p, {"x.txt": b"hello"}), "member 'x.txt' is not a .npy array"),
    "bad_header.npz": (lambda p: _write_zip(p, {"x.npy": b"\x93NUMPY\x01\x00\x04\x00{}  "}),
                       "member 'x.npy': not a valid .npy array"),
    "pickled.npz": (lambda p: _write_zip(p, {"x.npy": _npy_bytes({"descr": "|O", "fortran_order": False,
                                                                   "shape": (1,)}, bytes(8))}),
                    "member 'x.npy': holds Python objects"),
    "text.npz": (lambda p: p.write_text("x,y\n1,2\n"), "not a .npy or .npz file"),
    "future.npy": (lambda p: p.write_bytes(b"\x93NUMPY\x09\x00" + bytes(20)),
                   ".npy format version 9.0 is not supported"),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_inputs_that_lie_or_are_corrupt_are_one_line(tiny_onnx: Path, tmp_path: Path, name: str) -> None:
    make, expected = BAD_INPUTS[name]
    path = tmp_path / name
    make(path)
    line = one_line_error(["run", str(tiny_onnx), "--input", str(path)])
    assert line.startswith(f"error: {path}: ") and expected in line, line


def test_the_limit_is_modelkit_max_input_bytes(tiny_onnx: Path, x_npy: Path, monkeypatch) -> None:
    monkeypatch.setattr("modelkit.runtime.base.MAX_INPUT_BYTES", 31)  # x.npy holds 32 bytes
    line = one_line_error(["run", str(tiny_onnx), "--input", str(x_npy)])
    assert line == (f"error: {x_npy}: its header claims shape (2, 4) of float32, 32 bytes, more than the limit "
                    "of 31 (MODELKIT_MAX_INPUT_BYTES)")  # refused from the header, before the file is read
    monkeypatch.setattr("modelkit.runtime.base.MAX_INPUT_BYTES", 32)
    assert CliRunner().invoke(main, ["run", str(tiny_onnx), "--input", str(x_npy)]).exit_code == 0


@pytest.mark.parametrize("layout", ["npy", "npz", "npz_compressed", "fortran_npy"])
def test_valid_inputs_still_run(tiny_onnx: Path, tmp_path: Path, layout: str) -> None:
    x = np.random.default_rng(0).random((3, 4)).astype(np.float32)
    path = tmp_path / ("x.npy" if layout.endswith("npy") else "x.npz")
    if layout == "npy":
        np.save(path, x)
    elif layout == "fortran_npy":
        np.save(path, np.asfortranarray(x))
    elif layout == "npz":
        np.savez(path, x=x)
    else:
        np.savez_compressed(path, x=x)
    args = ["run", str(tiny_onnx), "--input", str(path), "--output", str(tmp_path / "y.npz")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(np.load(tmp_path / "y.npz")["probs"], modelkit.load(tiny_onnx).predict(x)["probs"])


# ---- outputs that cannot be created ----

@pytest.fixture(scope="module")
def tiny_keras(tmp_path_factory) -> Path:
    return make_tiny_keras(tmp_path_factory.mktemp("keras") / "tiny.keras")


def test_convert_into_a_folder_under_a_file(tiny_keras: Path, tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("a file, not a folder")
    out = tmp_path / "afile" / "new"
    line = one_line_error(["convert", str(tiny_keras), "--to", "onnx", "--out", str(out)])
    assert line == f"error: cannot write {out}: {tmp_path / 'afile'} is a file, not a folder"


def test_an_os_error_deeper_down_is_one_line_too(tiny_keras: Path, tmp_path: Path, monkeypatch) -> None:
    """Without the CLI's up-front check, the library's own mkdir fails typed; and a bare OSError from
    further down (a full disk here) is still one line naming the path."""
    monkeypatch.setattr("modelkit.cli.convert.check_outputs", lambda *paths: None)
    (tmp_path / "afile").write_text("a file, not a folder")
    out = tmp_path / "afile" / "new"
    line = one_line_error(["convert", str(tiny_keras), "--to", "onnx", "--out", str(out)])
    assert line == f"error: cannot create folder {out}: {tmp_path / 'afile'} is a file, not a folder"

    def full_disk(folder):
        raise OSError(errno.ENOSPC, "No space left on device", str(folder))

    monkeypatch.setattr("modelkit._atomic.make_dirs", full_disk)
    out = tmp_path / "new"
    line = one_line_error(["convert", str(tiny_keras), "--to", "onnx", "--out", str(out)])
    assert line == f"error: {out}: No space left on device"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="root writes into a chmod 0o500 folder anyway; the file-as-parent tests cover root")
def test_convert_and_train_into_an_unwritable_folder(tiny_keras: Path, tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        line = one_line_error(["convert", str(tiny_keras), "--to", "onnx", "--out", str(ro / "new")])
        assert line == f"error: cannot write {ro / 'new'}: {ro} is not writable"
        line = one_line_error(["train", "--model", "mlp", "--out", str(ro / "m.keras")])
        assert line == f"error: cannot write {ro / 'm.keras'}: {ro} is not writable"
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o700)


def test_train_and_run_outputs_under_a_file(tiny_onnx: Path, x_npy: Path, tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("a file, not a folder")
    line = one_line_error(["train", "--model", "mlp", "--epochs", "1", "--out", str(afile / "m.keras")])
    assert line == f"error: cannot write {afile / 'm.keras'}: {afile} is a file, not a folder"
    line = one_line_error(["run", str(tiny_onnx), "--input", str(x_npy), "--output", str(afile / "y.npz")])
    assert line == f"error: cannot write {afile / 'y.npz'}: {afile} is a file, not a folder"


# ---- manifests of the wrong shape ----

def _bad_manifest(tiny_onnx: Path, change) -> Path:
    m = {"format": "onnx", "signature": {"inputs": [{"name": "x", "shape": [None, 4], "dtype": "float32"}],
                                          "outputs": [{"name": "probs", "shape": [None, 3], "dtype": "float32"}]}}
    m = change(m) or m
    mp = tiny_onnx.with_name(tiny_onnx.name + ".modelkit.json")
    mp.write_text(json.dumps(m))
    return mp


@pytest.mark.parametrize("command", ["inspect", "run"])
@pytest.mark.parametrize("change,expected", [
    (lambda m: m["signature"]["inputs"][0].update(dtype="no-such-dtype"),
     "signature.inputs[0].dtype: 'no-such-dtype' is not a numpy dtype"),
    (lambda m: m["signature"].update(inputs=5), "signature.inputs: expected an array, got an integer 5"),
    (lambda m: [m], "top level: expected an object, got an array"),
], ids=["dtype", "inputs", "list"])
def test_a_bad_manifest_is_one_line(tiny_onnx: Path, x_npy: Path, command: str, change, expected: str) -> None:
    mp = _bad_manifest(tiny_onnx, change)
    args = [command, str(tiny_onnx)] + (["--input", str(x_npy)] if command == "run" else [])
    assert one_line_error(args) == f"error: {mp}: invalid manifest: {expected}"
