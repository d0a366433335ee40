"""Pickles inside torch archives that would run code are refused before torch opens the file; no
pickle is ever loaded with weights_only=False by modelkit, and np.load never allows pickles."""
from __future__ import annotations

import ast
import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import modelkit
from modelkit.errors import LoadError, UnsafeModelError
from modelkit.safety.pickles import check_pickle, check_torch_archive

ROOT = Path(__file__).resolve().parents[2]


class Touch:
    """Unpickling this calls os.system('touch CANARY') (pickled as the global posix.system + REDUCE)."""

    def __init__(self, canary: Path):
        self.cmd = f"touch {canary}"

    def __reduce__(self):
        return os.system, (self.cmd,)


def _replace_member(src: Path, dest: Path, suffix: str, data: bytes) -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w") as zout:
        hit = False
        for item in zin.infolist():
            body = zin.read(item.filename)
            if item.filename.endswith(suffix):
                body, hit = data, True
            zout.writestr(item, body)
    assert hit, suffix
    return dest


def _in_child(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)


def test_torchscript_with_malicious_data_pkl(artifacts, tmp_path):
    canary = tmp_path / "canary"
    evil = _replace_member(artifacts["torchscript"], tmp_path / "evil.pt", "/data.pkl",
                           pickle.dumps(Touch(canary), protocol=2))
    with pytest.raises(UnsafeModelError, match=r"data\.pkl: refused to load: a pickle inside would import and "
                                               r"call 'posix\.system'"):
        modelkit.load(evil)
    assert not canary.exists()
    # What torch alone does: TorchScript's unpickler resolves no Python globals, so it refuses too.
    proc = _in_child(f"import torch\ntry:\n torch.jit.load({str(evil)!r})\nexcept RuntimeError as e:\n"
                     f" print('REFUSED', type(e).__name__)")
    assert "REFUSED RuntimeError" in proc.stdout, proc.stderr[-500:]
    assert not canary.exists()


@pytest.mark.slow
def test_pt2_with_malicious_sample_inputs_runs_code_in_torch_but_not_in_modelkit(artifacts, tmp_path):
    canary = tmp_path / "canary"
    payload = tmp_path / "payload.pt"
    proc = _in_child(f"import torch, pickle, sys\nsys.path.insert(0, {str(ROOT)!r})\n"
                     "from tests.security.test_hostile_pickles import Touch\nfrom pathlib import Path\n"
                     f"torch.save(Touch(Path({str(canary)!r})), {str(payload)!r})")
    assert proc.returncode == 0, proc.stderr[-500:]
    evil = _replace_member(artifacts["pt2"], tmp_path / "evil.pt2", "/sample_inputs/model.pt", payload.read_bytes())
    refused = r"sample_inputs/model\.pt!.*data\.pkl: refused to load.*'posix\.system'"
    with pytest.raises(UnsafeModelError, match=refused):
        modelkit.load(evil)
    assert not canary.exists()
    # torch.export.load (torch 2.13) falls back to torch.load(weights_only=False): the payload RUNS.
    proc = _in_child(f"import torch\ntry:\n torch.export.load({str(evil)!r})\nexcept Exception as e:\n print(e)")
    assert canary.exists(), "torch.export.load no longer runs pickles: the pre-check is still right to refuse"


def test_pt2_with_use_pickle_weights_is_scanned(artifacts, tmp_path):
    canary = tmp_path / "canary"
    with zipfile.ZipFile(artifacts["pt2"]) as zf:
        name = next(n for n in zf.namelist() if n.endswith("model_weights_config.json"))
        cfg = json.loads(zf.read(name))
    first = next(iter(cfg["config"].values()))
    first["use_pickle"] = True
    evil = _replace_member(artifacts["pt2"], tmp_path / "w.pt2", "model_weights_config.json", json.dumps(cfg).encode())
    evil = _replace_member(evil, tmp_path / "w2.pt2", "/weights/" + first["path_name"],
                           pickle.dumps(Touch(canary), protocol=4))  # STACK_GLOBAL form
    with pytest.raises(UnsafeModelError, match="'posix.system'"):
        modelkit.load(evil)
    assert not canary.exists()


def test_legit_torch_archives_pass_and_load(artifacts):
    for fmt in ("torchscript", "pt2"):
        check_torch_archive(artifacts[fmt])
        assert modelkit.load(artifacts[fmt]).signature.input_names == ["x"]


@pytest.mark.parametrize("data, error, match", [
    (pickle.dumps(eval, protocol=4), UnsafeModelError, "builtins.eval"),  # noqa: S307 - only pickled
    (pickle.dumps(subprocess.Popen, protocol=4), UnsafeModelError, "subprocess.Popen"),
    (b"\x80\x02cposix\nsystem\nq\x00.", UnsafeModelError, "posix.system"),
    (b"\x80\x04\x95\x05\x00\x00\x00", LoadError, "not a readable pickle"),
])
def test_pickle_scanner(data, error, match):
    with pytest.raises(error, match=match):
        check_pickle(data, "x.pkl")


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = ast.unparse(node.func)
            kw = {k.arg: ast.unparse(k.value) for k in node.keywords if k.arg}
            yield node, name, kw


def test_no_unsafe_unpickling_anywhere_in_modelkit():
    """Every call site in modelkit/ (parsed, not grepped: docstrings may name the unsafe calls)."""
    offenders = []
    for path in (ROOT / "modelkit").rglob("*.py"):
        where = str(path.relative_to(ROOT))
        for node, name, kw in _calls(ast.parse(path.read_text())):
            line = f"{where}:{node.lineno}: {name}"
            if kw.get("weights_only") == "False" or kw.get("allow_pickle") == "True":
                offenders.append(line)
            if name in ("pickle.load", "pickle.loads", "joblib.load", "dill.load", "dill.loads", "_pickle.loads"):
                offenders.append(line)
            if name.endswith("np.load") or name == "numpy.load":
                if kw.get("allow_pickle") != "False":
                    offenders.append(line + " without allow_pickle=False")
            if name == "torch.load" and kw.get("weights_only") != "True":
                offenders.append(line + " without weights_only=True")
            if name.endswith(".extractall") and "filter" not in kw:
                offenders.append(line + " without filter= (use modelkit.safety.archive.safe_extract)")
    assert offenders == []
