"""A newcomer's own model with a registered custom layer, in their own folder: `--import MODULE_OR_FILE` on every
command that loads a model, the current folder importable as with `python -m`, `imports=[...]` in Python, and
the modules the calling Python process registered passed to modelkit's children without being named."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from modelkit.cli import main
from modelkit.errors import UserCodeError
from modelkit.keras_io import custom
from tests.helpers import modelkit_script
from tests.helpers.user_code import SCALED_SWISH

MAKE = '''import keras
import numpy as np
import mylayers

keras.utils.set_random_seed(0)
inp = keras.Input((6,), name="features")
x = keras.layers.Dense(8, name="dense")(inp)
x = mylayers.ScaledSwish(name="swish")(x)
keras.Model(inp, keras.layers.Dense(3, activation="softmax", name="probs")(x)).save("my.keras")
np.save("x.npy", np.random.default_rng(0).random((2, 6), dtype=np.float32))
'''


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """The user's folder: their layer module, the model their own script saved, an input file."""
    d = tmp_path_factory.mktemp("newcomer")
    (d / "mylayers.py").write_text(SCALED_SWISH)
    (d / "make.py").write_text(MAKE)
    done = subprocess.run([sys.executable, "make.py"], cwd=d, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return d


def _one_line_error(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in done.stderr, done.stderr
    return lines[0]


@pytest.mark.slow
def test_without_import_the_error_names_the_flag(folder: Path) -> None:
    line = _one_line_error(modelkit_script("inspect", "my.keras", cwd=folder))
    assert "mylayers.ScaledSwish" in line and "--import MODULE_OR_FILE" in line


NET = '''import keras


@keras.saving.register_keras_serializable(package="mynet")
class TinyNet(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.head = keras.layers.Dense(3)

    def call(self, x):
        return self.head(x)


@keras.saving.register_keras_serializable(package="mynet")
class Twice(keras.layers.Layer):
    def call(self, x):
        return 2.0 * x
'''


@pytest.mark.slow
def test_an_unregistered_subclassed_model_names_its_class_and_the_flag(tmp_path: Path) -> None:
    """nc46: a subclassed keras.Model defined in the training script itself is saved with no module, which the
    safety scan cannot name; Keras failed, and the line was its "Could not locate class 'Net'" with the whole
    config dumped, never saying --import."""
    (tmp_path / "mynet.py").write_text(NET)
    make = NET + ("\nnet = TinyNet()\nnet(keras.ops.zeros((1, 4)))\nnet.save('net.keras')\n"
                  "x = keras.Input((4,))\nkeras.Model(x, Twice()(x)).save('functional.keras')\n")
    done = subprocess.run([sys.executable, "-c", make], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    line = _one_line_error(modelkit_script("inspect", "net.keras", cwd=tmp_path))
    assert line.endswith("net.keras: Keras could not load this model: it uses the custom class 'TinyNet' (registered "
                         "as 'mynet>TinyNet'), defined in the script that saved the model (move it to a module of its "
                         "own), which no imported module registers: pass --import with the module or .py file that "
                         "defines it (imports=[...] in Python, or MODELKIT_IMPORTS)"), line
    done = modelkit_script("inspect", "net.keras", "--import", "mynet", cwd=tmp_path)  # the class, moved
    assert done.returncode == 0, done.stderr[-2000:]
    # nc169: a functional model with such a layer; Keras' dump starts with the model's own registered name
    line = _one_line_error(modelkit_script("inspect", "functional.keras", cwd=tmp_path))
    assert "it uses the custom class 'Twice' (registered as 'mynet>Twice'), defined in the script" in line, line


@pytest.mark.slow
def test_every_command_takes_the_users_module_by_name_from_their_folder(folder: Path) -> None:
    done = modelkit_script("convert", "my.keras", "--to", "onnx", "--out", "out", "--import", "mylayers", cwd=folder)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (folder / "out" / "my.onnx").is_file() and "parity OK" in done.stdout + done.stderr
    done = modelkit_script("inspect", "my.keras", "--import", "mylayers", cwd=folder)
    assert done.returncode == 0 and "probs" in done.stdout, done.stderr[-2000:]
    done = modelkit_script("run", "my.keras", "--input", "x.npy", "--output", "y.npz", "--import", "mylayers",
                           cwd=folder)
    assert done.returncode == 0, done.stderr[-2000:]
    probs = np.load(folder / "y.npz")["probs"]
    assert probs.shape == (2, 3) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    done = modelkit_script("verify", "my.keras", "out/my.onnx", "--import", "mylayers.py", cwd=folder)  # a path too
    assert done.returncode == 0 and "parity OK" in done.stdout + done.stderr, done.stderr[-2000:]


def test_a_missing_module_is_one_typed_line(folder: Path, monkeypatch) -> None:
    monkeypatch.chdir(folder)
    monkeypatch.setenv(custom.ENV_IMPORTS, "")
    result = CliRunner().invoke(main, ["inspect", "my.keras", "--import", "mylayerz"])
    assert result.exit_code == 2
    assert result.output.strip() == ("error: --import mylayerz: no module 'mylayerz' in the current folder or on "
                                     "the Python path; give a module name or a path to a .py file")
    with pytest.raises(UserCodeError, match="no such Python file"):
        custom.use_imports(["nowhere/layers.py"])


def test_use_imports_names_each_module_once_for_the_children(folder: Path, monkeypatch) -> None:
    monkeypatch.chdir(folder)
    monkeypatch.setenv(custom.ENV_IMPORTS, "json")
    assert custom.use_imports(["mylayers", "mylayers.py", "mylayers"]) == ["mylayers", str(folder / "mylayers.py"),
                                                                          "mylayers"]
    assert custom.env_imports() == ["json", "mylayers", str(folder / "mylayers.py")]


PYTHON_USER = '''import sys
import numpy as np
import modelkit
{first}
(r,) = modelkit.convert("my.keras", to="onnx", out_dir="{out}", force=True, {kwargs})
x = np.load("x.npy")
a = modelkit.load("my.keras", {kwargs}).predict({{"features": x}})["probs"]
b = modelkit.load(r.path).predict({{"features": x}})["probs"]
print("OK", r.parity["ok"], float(np.abs(a - b).max()))
'''


@pytest.mark.parametrize("first, kwargs", [("import mylayers  # registers ScaledSwish here", ""),
                                           ("", "imports=['mylayers']")],
                         ids=["imported-by-the-caller", "imports-argument"])
@pytest.mark.slow
def test_python_callers_need_no_environment_variable(folder: Path, first: str, kwargs: str) -> None:
    script = folder / f"use_{'imports' if kwargs else 'imported'}.py"
    script.write_text(PYTHON_USER.format(first=first, kwargs=kwargs, out=f"py_{script.stem}"))
    env = {k: v for k, v in os.environ.items() if k != custom.ENV_IMPORTS}  # the user's shell names nothing
    done = subprocess.run([sys.executable, script.name], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    ok, parity, diff = done.stdout.split()[-3:]
    assert ok == "OK" and parity == "True" and float(diff) < 1e-5


JAX_SCRIPT = '''import os
os.environ["KERAS_BACKEND"] = "jax"  # the user's own script picks its backend before importing Keras
import keras
from keras import ops


@keras.saving.register_keras_serializable(package="jaxgate")
class ErfGate(keras.layers.Layer):
    def call(self, x):
        return x * 0.5 * (1.0 + ops.erf(x / 1.4142135))


if __name__ == "__main__":
    inp = keras.Input((5,), name="features")
    keras.Model(inp, keras.layers.Dense(2, name="out")(ErfGate()(keras.layers.Dense(8)(inp)))).save("gate.keras")
'''


@pytest.mark.slow
def test_a_module_that_sets_its_own_backend_does_not_fix_the_hops_backend(tmp_path: Path) -> None:
    """nc101: `--import train.py`, a script that sets KERAS_BACKEND=jax before `import keras`: importing it first in
    the tensorflow and torch children loaded Keras under JAX there, and every format failed with "Keras is already
    loaded with backend 'jax' in this process; 'tensorflow' needs a child process"."""
    (tmp_path / "train.py").write_text(JAX_SCRIPT)
    done = subprocess.run([sys.executable, "train.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    done = modelkit_script("convert", "gate.keras", "--to", "tflite,torchscript", "--out", "out", "--import",
                           "train.py", cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "out" / "gate.tflite").is_file() and (tmp_path / "out" / "gate.torchscript.pt").is_file()


UNGUARDED = '''import keras
import numpy as np


@keras.saving.register_keras_serializable(package="user")
class Gate(keras.layers.Layer):
    def call(self, x):
        return x * keras.ops.sigmoid(x)


def build():
    model = keras.Sequential([keras.Input((4,)), Gate()])
    model.compile("adam", "mse")
    return model


model = build()
for epoch in range(2):
    model.fit(np.zeros((8, 4)), np.zeros((8, 4)), verbose=0)
model.save("gate.keras")

if __name__ == "__main__":
    model.evaluate(np.zeros((8, 4)), np.zeros((8, 4)))
'''


def test_a_script_that_trains_when_imported_is_named_with_its_lines(tmp_path: Path, monkeypatch) -> None:
    """nc101's script trained and saved at its top level: `--import train.py` re-ran it in this process and in every
    child that loads the model, and nothing said why a conversion took minutes. The CLI names the calls and the fix;
    work inside functions or under the `__main__` guard does not count. The file is read, not run."""
    import onnx
    from onnx import TensorProto, helper

    from modelkit.keras_io.unguarded import top_level_work

    (tmp_path / "train.py").write_text(UNGUARDED)
    assert top_level_work(tmp_path / "train.py") == [("fit", 19), ("save", 20)]
    (tmp_path / "layers.py").write_text(UNGUARDED.split("\n\nmodel = build()")[0] + "\n")
    assert top_level_work(tmp_path / "layers.py") == []
    (tmp_path / "broken.py").write_text("def f(:\n")
    assert top_level_work(tmp_path / "broken.py") == []  # importing it reports the syntax error with its line

    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=8),
              str(tmp_path / "m.onnx"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(custom.ENV_IMPORTS, "")
    result = CliRunner().invoke(main, ["inspect", "m.onnx", "--import", "train.py"])
    assert result.exit_code == 0, result.output
    assert ("warning: train.py runs fit() at line 19, save() at line 20 when imported; --import runs it here and "
            "again in every process") in result.output
    assert 'under `if __name__ == "__main__":`' in result.output and not (tmp_path / "gate.keras").exists()
    result = CliRunner().invoke(main, ["inspect", "m.onnx", "--import", "layers"])  # by module name, in the folder
    assert result.exit_code == 0 and "warning" not in result.output, result.output
