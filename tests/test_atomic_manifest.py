import json

import pytest

from modelkit import _atomic, manifest
from modelkit.errors import ArtifactExistsError, LoadError, ManifestError, OutputPathError
from modelkit.spec import Signature, TensorSpec


def test_failed_write_leaves_nothing(tmp_path):
    dest = tmp_path / "m.onnx"
    with pytest.raises(RuntimeError):
        with _atomic.atomic_path(dest) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("converter crashed")
    assert list(tmp_path.iterdir()) == []


def test_existing_artifact_is_kept_without_force(tmp_path):
    dest = tmp_path / "m.onnx"
    dest.write_bytes(b"old")
    with pytest.raises(ArtifactExistsError, match="--force"):
        with _atomic.atomic_path(dest) as tmp:
            tmp.write_bytes(b"new")
    assert dest.read_bytes() == b"old"
    with _atomic.atomic_path(dest, force=True) as tmp:
        tmp.write_bytes(b"new")
    assert dest.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_folder_artifacts_are_replaced_whole(tmp_path):
    dest = tmp_path / "m_saved_model"
    dest.mkdir()
    (dest / "stale.pb").write_text("x")
    with _atomic.atomic_path(dest, force=True) as tmp:
        tmp.mkdir()
        (tmp / "saved_model.pb").write_text("y")
    assert [p.name for p in dest.iterdir()] == ["saved_model.pb"]


def test_manifest_round_trip_and_checksums(tmp_path):
    art = tmp_path / "m.onnx"
    art.write_bytes(b"abc")
    sig = Signature((TensorSpec("x", (None, 4)),), (TensorSpec("y", (None, 2)),))
    path = manifest.write(art, manifest.Manifest(format="onnx", signature=sig.to_dict(), opset=17))
    assert path.name == "m.onnx.modelkit.json" and oct(path.stat().st_mode & 0o044) == "0o44"
    m = manifest.read(art)
    assert m.sig == sig and m.size_bytes == 3 and m.opset == 17
    assert m.sha256 == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_corrupt_manifest_is_a_load_error(tmp_path):
    art = tmp_path / "m.onnx"
    art.write_bytes(b"abc")
    (tmp_path / "m.onnx.modelkit.json").write_text("{not json")
    with pytest.raises(LoadError, match="corrupt manifest"):
        manifest.read(art)
    (tmp_path / "m.onnx.modelkit.json").write_text(json.dumps({"format": "caffe", "signature": {"inputs": []}}))
    with pytest.raises(ManifestError, match="invalid manifest: format: unknown format 'caffe'"):
        manifest.read(art)
    assert manifest.read(tmp_path / "other.onnx") is None


def test_a_folder_that_cannot_be_created_is_a_typed_error_naming_it(tmp_path):
    """A parent that is a regular file fails for root too (unlike a chmod'ed folder)."""
    afile = tmp_path / "afile"
    afile.write_text("a file, not a folder")
    with pytest.raises(OutputPathError) as info:
        with _atomic.atomic_path(afile / "new" / "m.onnx") as tmp:
            tmp.write_bytes(b"never")
    assert str(info.value) == f"cannot create folder {afile / 'new'}: {afile} is a file, not a folder"
    with pytest.raises(OutputPathError) as info:
        _atomic.write_text(afile / "m.onnx.modelkit.json", "{}")
    assert str(info.value) == f"cannot create folder {afile}: {afile} is a file, not a folder"
    with pytest.raises(OutputPathError) as info:
        _atomic.check_creatable(afile / "x")
    assert str(info.value) == f"cannot write {afile / 'x'}: {afile} is a file, not a folder"
    _atomic.check_creatable(tmp_path / "new" / "deeper" / "m.onnx")  # creatable: nothing raised, nothing made
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"] and afile.read_text() == "a file, not a folder"
