"""The Keras baseline of `modelkit bench` is found from any folder: a manifest's source path is as
`modelkit convert` was given it (relative to the folder it ran in), so from elsewhere it is looked for beside
the artifact and above it, and taken only when its sha256 is the recorded one."""
from __future__ import annotations

from modelkit import manifest
from modelkit.bench.runner import keras_source
from modelkit.formats import Format
from modelkit.spec import Signature, TensorSpec
from tests.helpers import make_tiny_onnx

SIG = Signature((TensorSpec("x", (None, 4)),), (TensorSpec("probs", (None, 3)),)).to_dict()


def _converted(tmp_path, keras_bytes: bytes = b"the user's model"):
    """work/m.keras converted (from work/) with --out all: all/m.onnx whose manifest names 'm.keras'."""
    work = tmp_path / "work"
    (work / "all").mkdir(parents=True)
    (work / "m.keras").write_bytes(b"the user's model")
    onnx = make_tiny_onnx(work / "all" / "m.onnx")
    source = {"path": "m.keras", "format": "keras", "sha256": manifest.sha256_of(work / "m.keras")}
    manifest.write(onnx, manifest.Manifest(format="onnx", signature=SIG, source=source))
    (work / "m.keras").write_bytes(keras_bytes)
    return work, onnx


def test_the_source_is_found_from_another_folder(tmp_path, monkeypatch):
    work, onnx = _converted(tmp_path)
    monkeypatch.chdir(tmp_path)  # not the folder the conversion ran in: 'm.keras' is not here
    assert keras_source(onnx, Format.ONNX) == (work / "m.keras").resolve()


def test_a_file_changed_since_is_not_taken_as_the_baseline(tmp_path, monkeypatch):
    work, onnx = _converted(tmp_path, keras_bytes=b"retrained since")
    monkeypatch.chdir(tmp_path)
    assert keras_source(onnx, Format.ONNX) is None


def test_another_model_at_the_named_path_is_not_taken(tmp_path, monkeypatch):
    """From a folder that holds another m.keras, that file is not the baseline: the one beside the artifact is."""
    work, onnx = _converted(tmp_path)
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "m.keras").write_bytes(b"someone else's model")
    monkeypatch.chdir(other)
    assert keras_source(onnx, Format.ONNX) == (work / "m.keras").resolve()
