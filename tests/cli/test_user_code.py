"""`modelkit train --model file.py:function` runs the user's file as `python file.py` would: its folder is
importable (at import time, later, and in child processes), and an exception in the user's code is one
line naming the file and line (the traceback with --debug). Real files in tmp_path; the CLI runs from
another working folder."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from modelkit import manifest
from modelkit.cli import main

BUILD = '''import keras
import {a}  # a sibling module, imported with the builder


def build(num_classes=10):
    import {b}  # another sibling, imported lazily when the builder runs

    inp = keras.Input((64,), name="features")
    return keras.Model(inp, {b}.head(num_classes)({a}.hidden(8)(inp)))
'''
HIDDEN = '''import keras


def hidden(units):
    return keras.layers.Dense(units, activation="relu")
'''
HEAD = '''import keras


def head(n):
    return keras.layers.Dense(n, activation="softmax")
'''


@pytest.fixture
def own_imports(tmp_path: Path, monkeypatch):
    """The user's folder goes to the front of sys.path and stays (as designed): restore sys.path and forget
    the user's modules after a test that imports them in this process."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None) or "").startswith(str(tmp_path)):
            del sys.modules[name]


def _project(tmp_path: Path, tag: str) -> tuple[Path, Path]:
    """tmp_path/proj with the builder and its two siblings (module names unique per test, as this
    process keeps what it imported), and tmp_path/work, the working folder the CLI runs in."""
    proj, work = tmp_path / "proj", tmp_path / "work"
    proj.mkdir()
    work.mkdir()
    a, b = f"layers_a_{tag}", f"layers_b_{tag}"
    (proj / f"{a}.py").write_text(HIDDEN)
    (proj / f"{b}.py").write_text(HEAD)
    (proj / f"build_{tag}.py").write_text(BUILD.format(a=a, b=b))
    return proj / f"build_{tag}.py", work


@pytest.mark.slow
def test_builder_imports_its_siblings_from_another_working_folder(tmp_path: Path) -> None:
    builder, work = _project(tmp_path, "cli")
    args = [sys.executable, "-m", "modelkit", "train", "--model", f"../proj/{builder.name}:build", "--epochs", "1",
            "-q", "--out", "m.keras"]
    done = subprocess.run(args, cwd=work, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith(str(work / "m.keras"))
    assert manifest.read(work / "m.keras").training["imports"] == [f"../proj/{builder.name}"]


@pytest.mark.slow
def test_a_training_child_imports_the_siblings_too(tmp_path: Path, monkeypatch, own_imports) -> None:
    """Keras is loaded here under TensorFlow, so --backend torch trains in a child process, which imports
    the builder (and, lazily, its siblings) again."""
    from modelkit._backend import import_keras, loaded_backend

    import_keras()
    if loaded_backend() != "tensorflow":
        pytest.skip(f"this process has Keras under {loaded_backend()}, not tensorflow")
    builder, work = _project(tmp_path, "child")
    monkeypatch.chdir(work)
    result = CliRunner().invoke(main, ["train", "--model", f"../proj/{builder.name}:build", "--backend", "torch",
                                       "--epochs", "1", "-q", "--out", "m.keras"])
    assert result.exit_code == 0, result.output[-3000:]
    assert "(torch, 1 epochs)" in result.stdout and (work / "m.keras").is_file()
    assert "layers_b_child" not in sys.modules  # it was imported in the child, not here


# (file name, its text, the function, the expected message after "error: <folder>/") per kind of failure
FAILURES = [
    ("raises_at_import.py", "import keras\n\nx = 1 / 0\n", "build",
     "raises_at_import.py line 3: ZeroDivisionError: division by zero"),
    ("missing_sibling.py", "import no_such_sibling_module_xyz\n", "build",
     "missing_sibling.py line 1: ModuleNotFoundError: No module named 'no_such_sibling_module_xyz'"),
    ("bad_syntax.py", "def build(:\n    pass\n", "build", "bad_syntax.py line 1: SyntaxError: invalid syntax"),
    ("raises_in_builder.py", "import sibling_raises\n\n\ndef build(num_classes=10):\n"
     "    return sibling_raises.make()\n", "build",
     "sibling_raises.py line 2: ValueError: units must be positive, got -1"),
]


@pytest.mark.parametrize("name,text,func,expected", FAILURES, ids=[f[0] for f in FAILURES])
def test_an_exception_in_user_code_is_one_line_naming_file_and_line(tmp_path: Path, monkeypatch, own_imports, name,
                                                                     text, func, expected) -> None:
    proj, work = tmp_path / "proj", tmp_path / "work"
    proj.mkdir()
    work.mkdir()
    (proj / name).write_text(text)
    (proj / "sibling_raises.py").write_text("def make():\n    raise ValueError('units must be positive, got -1')\n")
    monkeypatch.chdir(work)
    args = ["train", "--model", f"../proj/{name}:{func}", "--epochs", "1", "-q", "--out", "m.keras"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output[-3000:]
    assert result.output.splitlines() == [f"error: {proj}/{expected}"]
    result = CliRunner().invoke(main, ["--debug", *args])
    assert result.exit_code == 2
    assert "Traceback" in result.output and result.output.rstrip().endswith(expected)
    assert not (work / "m.keras").exists()
