"""Manifests are validated against modelkit/manifest.schema.json (jsonschema) before any field is used:
a wrong type anywhere is a ManifestError naming the field and the problem, never a TypeError or an
engine's misleading complaint; every manifest modelkit writes validates."""
from __future__ import annotations

import copy
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import modelkit
from modelkit import manifest
from modelkit.errors import LoadError, ManifestError

ROOT = Path(__file__).resolve().parents[1]
GOOD = {"format": "onnx", "signature": {"inputs": [{"name": "x", "shape": [None, 4], "dtype": "float32"}],
                                        "outputs": [{"name": "probs", "shape": [None, 3], "dtype": "float32"}]}}


def _set(path: str, value):
    """A change to GOOD: set the field at a dotted path ('signature.inputs.0.dtype')."""
    def change(m):
        *parents, last = path.split(".")
        node = m
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node.setdefault(p, {})
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
        return m
    return change


BAD = [
    (_set("signature.inputs", 5), "signature.inputs: expected an array, got an integer 5"),
    (_set("signature.inputs.0.dtype", "no-such-dtype"),
     "signature.inputs[0].dtype: 'no-such-dtype' is not a numpy dtype"),
    (lambda m: [m], "top level: expected an object, got an array"),
    (_set("sha256", 12345), "sha256: expected a string or null, got an integer 12345"),
    (_set("sha256", "abc"), "sha256: 'abc' is not a sha256 (64 lowercase hex digits)"),
    (_set("signature", "x"), "signature: expected an object, got a string 'x'"),
    (_set("chain", "x"), "chain: expected an array, got a string 'x'"),
    (_set("chain", [{"source": "keras", "converter": "c"}]), "chain[0].target: missing"),
    (_set("signature.outputs", 7), "signature.outputs: expected an array, got an integer 7"),
    (_set("signature.inputs.0.shape", [None, "4"]),
     "signature.inputs[0].shape[1]: expected an integer or null, got a string '4'"),
    (_set("signature.inputs.0.shape", [None, True]),
     "signature.inputs[0].shape[1]: expected an integer or null, got a boolean True"),
    (_set("signature.outputs.0", {"shape": [None, 3]}), "signature.outputs[0].name: missing"),
    (_set("signature.inputs.0.name", ["x"]), "signature.inputs[0].name: expected a string, got an array"),
    (lambda m: {"format": m["format"]}, "signature: missing"),
    (_set("format", 5), "format: expected a string, got an integer 5"),
    (_set("format", "caffe"), "format: unknown format 'caffe'"),
    (_set("parity", {"ok": "yes", "tolerance": {"atol": 1e-4}, "outputs": []}),
     "parity.ok: expected a boolean, got a string 'yes'"),
    (_set("training", {"model": "mlp", "data": "digits", "seed": "0"}),
     "training.seed: expected an integer, got a string '0'"),
    (_set("source", 3),
     "source: expected an object or null, got an integer 3"),
    (_set("extra", []), "extra: expected an object, got an array"),
    (_set("size_bytes", -1), "size_bytes: -1 is less than the minimum of 0"),
]


def _id(i: int, expected: str) -> str:
    return f"{i}-" + expected.split(":")[0].translate(str.maketrans(" []", "_()"))


@pytest.mark.parametrize("change,expected", BAD, ids=[_id(i, e) for i, (_, e) in enumerate(BAD)])
def test_a_bad_manifest_is_a_manifest_error_naming_the_field(tiny_onnx: Path, change, expected: str) -> None:
    mp = tiny_onnx.with_name(tiny_onnx.name + ".modelkit.json")
    mp.write_text(json.dumps(change(copy.deepcopy(GOOD))))
    with pytest.raises(ManifestError) as info:
        modelkit.load(tiny_onnx)
    assert str(info.value).startswith(f"{mp}: invalid manifest: {expected}"), str(info.value)


@pytest.mark.parametrize("text,expected", [
    ("{not json", "corrupt manifest (not JSON: "),
    ('{"format": "onnx", "signature": {"inputs": []}, "extra": ' + "[" * 100_000 + "]" * 100_000 + "}",
     "corrupt manifest (not JSON: maximum recursion depth"),
    (b"\xff\xfe{}", "corrupt manifest (not JSON: "),
])
def test_unreadable_json_is_a_manifest_error(tiny_onnx: Path, text, expected: str) -> None:
    mp = tiny_onnx.with_name(tiny_onnx.name + ".modelkit.json")
    mp.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ManifestError, match=r"^" + str(mp).replace(".", r"\.") + ": " + expected.replace("(", r"\(")):
        modelkit.load(tiny_onnx)
    assert issubclass(ManifestError, LoadError)


def test_minimal_and_default_manifests_validate(tiny_onnx: Path) -> None:
    manifest.validate({"format": "tvm", "signature": {"inputs": []}})  # what tests write for a TVM library
    m = manifest.Manifest(format="onnx", signature=GOOD["signature"])
    manifest.write(tiny_onnx, m)
    assert manifest.read(tiny_onnx).sig.input_names == ["x"]
    assert modelkit.load(tiny_onnx).predict({"x": [[0.0, 1.0, 2.0, 3.0]]})["probs"].shape == (1, 3)


@pytest.fixture(scope="module")
def trained_and_converted(tmp_path_factory) -> list[Path]:
    """A real training manifest (keras) and a real conversion manifest (onnx, with chain and parity)."""
    from modelkit._backend import import_keras
    from modelkit.core.train import train

    import_keras()
    out = tmp_path_factory.mktemp("schema") / "mlp.keras"
    train(model="mlp", epochs=1, verbose=False, out=out)
    (onnx,) = modelkit.convert(out, "onnx")
    return [out, Path(onnx.path)]


@pytest.mark.slow
def test_manifests_from_a_real_training_and_conversion_validate(trained_and_converted: list[Path]) -> None:
    keras_path, onnx_path = trained_and_converted
    for artifact in (keras_path, onnx_path):
        data = json.loads(Path(f"{artifact}.modelkit.json").read_text())
        manifest.validate(data, str(artifact))
        assert manifest.read(artifact).format == data["format"]
    data = json.loads(Path(f"{onnx_path}.modelkit.json").read_text())
    assert data["chain"][0]["converter"] and data["parity"]["ok"] and data["training"]["model"] == "mlp"
    data["chain"][0]["versions"] = "tf2onnx"  # the same manifest with one wrong type does not validate
    with pytest.raises(ManifestError, match=r"chain\[0\]\.versions: expected an object, got a string 'tf2onnx'"):
        manifest.validate(data, str(onnx_path))


def test_jsonschema_is_imported_only_when_a_manifest_is_read() -> None:
    code = ("import sys, modelkit, modelkit.runtime, modelkit.manifest, modelkit.cli; "
            "print('jsonschema' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr[-2000:]


def test_the_schema_ships_with_the_package_and_jsonschema_is_a_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "jsonschema==4.26.0" in project["project"]["dependencies"]
    assert "manifest.schema.json" in project["tool"]["setuptools"]["package-data"]["modelkit"]
    assert manifest.SCHEMA_FILE.is_file() and manifest.SCHEMA_FILE.parent == Path(manifest.__file__).parent


def test_an_oversized_manifest_is_refused_unread(tiny_onnx: Path, monkeypatch) -> None:
    mp = tiny_onnx.with_name(tiny_onnx.name + ".modelkit.json")
    mp.write_text(json.dumps(GOOD))
    monkeypatch.setattr(manifest, "MAX_MANIFEST_BYTES", 10)
    with pytest.raises(ManifestError) as info:
        manifest.read(tiny_onnx)
    size = mp.stat().st_size
    assert str(info.value) == f"{mp}: corrupt manifest ({size} bytes, more than the 10 a manifest may have)"
