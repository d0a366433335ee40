import zipfile

import pytest

from modelkit.errors import FormatError
from modelkit.formats import Format, detect, manifest_path


def test_onnx_detected_by_content(tiny_onnx):
    assert detect(tiny_onnx) == Format.ONNX


def test_suffix_does_not_decide(tmp_path, tiny_onnx):
    lying = tmp_path / "model.tflite"
    lying.write_bytes(tiny_onnx.read_bytes())
    assert detect(lying) == Format.ONNX
    fake = tmp_path / "fake.onnx"
    fake.write_bytes(b"this is not a model at all, just text")
    with pytest.raises(FormatError, match="not a model file of a known format"):
        detect(fake)


def test_tflite_identifier(tmp_path):
    p = tmp_path / "m.bin"
    p.write_bytes(b"\x1c\x00\x00\x00TFL3" + b"\x00" * 32)
    assert detect(p) == Format.TFLITE


def test_keras_zip_and_other_zips(tmp_path):
    k = tmp_path / "m.zip"
    with zipfile.ZipFile(k, "w") as zf:
        zf.writestr("config.json", "{}")
        zf.writestr("metadata.json", "{}")
    assert detect(k) == Format.KERAS
    ts = tmp_path / "m.pt"
    with zipfile.ZipFile(ts, "w") as zf:
        zf.writestr("archive/data.pkl", b"")
        zf.writestr("archive/code/__torch__/m.py", "")
    assert detect(ts) == Format.TORCHSCRIPT
    other = tmp_path / "other.keras"
    with zipfile.ZipFile(other, "w") as zf:
        zf.writestr("readme.txt", "hi")
    with pytest.raises(FormatError, match="zip archive, but not"):
        detect(other)


def test_a_data_npz_and_a_manifest_are_named_for_what_they_are(tmp_path, tiny_onnx):
    import numpy as np

    np.savez(tmp_path / "test.npz", x=np.zeros((2, 4), np.float32), y=np.arange(2))
    with pytest.raises(FormatError, match=r"test.npz: a numpy .npz of arrays \(x, y\), data and not a model: "
                                          r"pass it to --data, --input"):
        detect(tmp_path / "test.npz")
    manifest = tmp_path / "tiny.onnx.modelkit.json"
    manifest.write_text('{"format": "onnx"}')
    with pytest.raises(FormatError, match=r"the manifest of tiny.onnx, not a model \(modelkit inspect .*tiny.onnx\)"):
        detect(manifest)


def test_saved_model_folder(tmp_path):
    (tmp_path / "sm").mkdir()
    with pytest.raises(FormatError, match="not a TF SavedModel"):
        detect(tmp_path / "sm")
    (tmp_path / "sm" / "saved_model.pb").write_bytes(b"\x08\x01")
    assert detect(tmp_path / "sm") == Format.SAVED_MODEL


def test_elf_without_manifest_is_refused(tmp_path):
    p = tmp_path / "lib.so"
    p.write_bytes(b"\x7fELF" + b"\x00" * 60)
    with pytest.raises(FormatError, match="without a TVM manifest"):
        detect(p)


def test_missing_and_tiny_files(tmp_path):
    with pytest.raises(FormatError, match="no such file"):
        detect(tmp_path / "nope.onnx")
    (tmp_path / "t").write_bytes(b"\x08")
    with pytest.raises(FormatError, match="too short"):
        detect(tmp_path / "t")


def test_parse_lists_valid_formats():
    assert Format.parse("SavedModel") == Format.SAVED_MODEL and Format.parse("litert") == Format.TFLITE
    with pytest.raises(FormatError, match="valid formats: keras, onnx"):
        Format.parse("caffe")


def test_manifest_path_sits_beside_artifact(tmp_path):
    assert manifest_path(tmp_path / "m.onnx").name == "m.onnx.modelkit.json"
    assert manifest_path(tmp_path / "m_saved_model").name == "m_saved_model.modelkit.json"
