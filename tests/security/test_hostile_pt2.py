"""Hostile .pt2 files (issue 16, item 1 and what reading torch's loader found next to it): every member
torch.export.load could unpickle is scanned, whatever its name, depth or first byte, and every pickle
of a legacy torch.load stream; the program's guards_code and AOTInductor libraries are code.

Each payload is built in the test and proven live: torch alone (in a child) runs it and creates the
canary; modelkit refuses the file and the canary stays absent."""
from __future__ import annotations

import json
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

import modelkit
from modelkit.errors import LoadError, UnsafeModelError

from ._build import build_pt2
from ._hostile import in_child, rewrite_zip

pytest.importorskip("torch")

MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER
SYS_INFO = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}


class Touch:
    """Unpickling this runs `touch CANARY` (posix.system + REDUCE)."""

    def __init__(self, canary: Path):
        self.cmd = f"touch {canary}"

    def __reduce__(self):
        return os.system, (self.cmd,)


def text_pickle(canary: Path) -> bytes:
    """A protocol-0 pickle: no 0x80 header, nothing in its first byte says 'pickle'."""
    return f"cposix\nsystem\n(Vtouch {canary}\ntR.".encode()


def legacy_stream(canary: Path) -> bytes:
    """torch.load's legacy format: magic, protocol, sys info, THE OBJECT (hostile), storage keys, raw bytes."""
    return (pickle.dumps(MAGIC, protocol=2) + pickle.dumps(1001, protocol=2) + pickle.dumps(SYS_INFO, protocol=2)
            + pickle.dumps(Touch(canary), protocol=0) + pickle.dumps([], protocol=2) + b"\x00" * 16)


def _weights_config(src: Path) -> tuple[str, dict]:
    with zipfile.ZipFile(src) as zf:
        name = next(n for n in zf.namelist() if n.endswith("data/weights/model_weights_config.json"))
        return name, json.loads(zf.read(name))


def _use_pickle_subpath(src: Path, dest: Path, canary: Path) -> Path:
    """A `use_pickle` weight whose path_name is `sub/weight_0`: its base name matches nothing."""
    name, cfg = _weights_config(src)
    first = next(iter(cfg["config"].values()))
    cfg["config"]["evil"] = {**first, "use_pickle": True, "path_name": "sub/weight_0"}
    root = name.split("/", 1)[0]
    return rewrite_zip(src, dest, {name: json.dumps(cfg).encode()},
                       add={f"{root}/data/weights/sub/weight_0": text_pickle(canary)})


def _adding(member: str, payload) -> object:
    return lambda src, dest, canary: rewrite_zip(src, dest, add={member: payload(canary)})


VARIANTS = {  # name -> (what modelkit must say, how to build it)
    "legacy_weights_text_pickle": (r"data/weights/model\.pt: refused to load.*'posix\.system'",
                                   _adding("tiny/data/weights/model.pt", text_pickle)),
    "legacy_constants_text_pickle": (r"data/constants/model\.pt: refused to load.*'posix\.system'",
                                     _adding("tiny/data/constants/model.pt", text_pickle)),
    "use_pickle_weight_in_a_subfolder": (r"data/weights/sub/weight_0: refused to load.*'posix\.system'",
                                         _use_pickle_subpath),
    "legacy_stream_object_is_hostile": (r"data/constants/model\.pt \(pickle 4\).*'posix\.system'",
                                        _adding("tiny/data/constants/model.pt", legacy_stream)),
    "protocol_1_sample_inputs": (r"sample_inputs/model\.pt: refused to load.*'posix\.system'",
                                 lambda s, d, c: rewrite_zip(s, d, {"data/sample_inputs/model.pt":
                                                                    pickle.dumps(Touch(c), protocol=1)})),
}


@pytest.fixture(scope="module")
def tiny_pt2(tmp_path_factory) -> Path:
    return build_pt2(tmp_path_factory.mktemp("pt2") / "tiny.pt2")


@pytest.fixture(scope="module")
def hostile(tiny_pt2, tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    folder = tmp_path_factory.mktemp("hostile_pt2")
    out = {}
    for name, (_, build) in VARIANTS.items():
        canary = folder / f"{name}.canary"
        out[name] = (build(tiny_pt2, folder / f"{name}.pt2", canary), canary)
    return out


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_modelkit_refuses_every_unpicklable_member(hostile, variant):
    from modelkit.cli.inspect import describe

    path, canary = hostile[variant]
    with pytest.raises(UnsafeModelError, match=VARIANTS[variant][0]):
        modelkit.load(path)
    with pytest.raises(UnsafeModelError, match=VARIANTS[variant][0]):
        describe(str(path))  # `modelkit inspect` of a file without a manifest loads it
    with pytest.raises(UnsafeModelError, match="posix.system"):
        modelkit.load(path, trust_unsafe_code=True)  # pickles are never trusted
    assert not canary.exists()


@pytest.mark.slow
def test_torch_alone_runs_every_payload(hostile):
    """The payloads are live: torch.export.load (2.13) runs each of them (so the refusals above matter)."""
    paths = {name: str(p) for name, (p, _) in hostile.items()}
    proc = in_child("import torch, json, sys\n"
                    f"for name, path in json.loads({json.dumps(json.dumps(paths))}).items():\n"
                    "    try:\n        torch.export.load(path)\n    except Exception:\n        pass\n")
    assert proc.returncode == 0, proc.stderr[-800:]
    ran = {name for name, (_, canary) in hostile.items() if canary.exists()}
    assert ran == set(VARIANTS), f"torch did not run: {set(VARIANTS) - ran}"
    for _, canary in hostile.values():
        canary.unlink()


def test_unreadable_member_torch_would_unpickle_is_refused(tiny_pt2, tmp_path):
    bad = rewrite_zip(tiny_pt2, tmp_path / "bad.pt2", add={"tiny/data/weights/model.pt": b"\x00not a pickle"})
    with pytest.raises(LoadError, match=r"data/weights/model\.pt: not a readable pickle"):
        modelkit.load(bad)


def test_raw_tensor_that_looks_like_a_pickle_is_not_refused(tiny_pt2, tmp_path):
    """A member the payload config declares raw (use_pickle false) is never unpickled: no false refusal."""
    name, cfg = _weights_config(tiny_pt2)
    raw = next(m for m in cfg["config"].values() if not m["use_pickle"])
    with zipfile.ZipFile(tiny_pt2) as zf:
        size = len(zf.read(name.replace("model_weights_config.json", raw["path_name"])))
    body = b"\x80\x02cposix\nsystem\n."  # a complete pickle naming posix.system, as raw float bytes
    body += b"\x00" * (size - len(body))
    odd = rewrite_zip(tiny_pt2, tmp_path / "odd.pt2", {f"data/weights/{raw['path_name']}": body})
    m = modelkit.load(odd)
    assert m.predict(np.zeros((2, 4), np.float32))["probs"].shape == (2, 3)


def test_guards_code_is_python_that_runs_on_predict(tiny_pt2, tmp_path):
    """torch.export pastes guards_code into a function with exec and runs it on every call."""
    canary = tmp_path / "canary"

    def add_guard(body: bytes) -> bytes:
        program = json.loads(body)
        program["guards_code"] = [f"__import__('os').system('touch {canary}') == 0"]
        return json.dumps(program).encode()

    evil = rewrite_zip(tiny_pt2, tmp_path / "guard.pt2", {"models/model.json": add_guard})
    with pytest.raises(UnsafeModelError, match=r"models/model\.json: refused to load: guards_code entry .*"
                                               r"--trust-unsafe-code"):
        modelkit.load(evil)
    assert not canary.exists()
    m = modelkit.load(evil, trust_unsafe_code=True)  # the user's own file: the flag lifts code checks
    m.predict(np.zeros((2, 4), np.float32))
    assert canary.exists(), "the guard ran: the refusal above is not theoretical"


def test_aotinductor_native_library_is_refused(tiny_pt2, tmp_path):
    evil = rewrite_zip(tiny_pt2, tmp_path / "aoti.pt2", add={"tiny/data/aotinductor/model/model.so": b"\x7fELF"})
    with pytest.raises(UnsafeModelError, match=r"data/aotinductor/model/model\.so: refused to load: an "
                                               r"AOTInductor package, native code"):
        modelkit.load(evil)


def test_legit_pt2_still_loads(tiny_pt2):
    m = modelkit.load(tiny_pt2)
    assert m.predict(np.zeros((3, 4), np.float32))["probs"].shape == (3, 3)
