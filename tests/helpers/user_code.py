"""Source files a newcomer would write beside their model, shared by the tests that play that newcomer."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType


def write_module(folder: Path, name: str, source: str) -> ModuleType:
    """`source` written to folder/name.py and imported from there (its Keras classes registered), as a user's
    module beside their model: the module, whose file `--import` / imports=[...] can name too."""
    path = folder / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

def keras_beside(folder: Path, name: str, source: str, backend: str = "tensorflow") -> tuple[ModuleType, ModuleType]:
    """(the user's module from write_module, keras under `backend` with the seed set to 0): what a test that builds
    a model from a newcomer's own layers starts with."""
    from modelkit._backend import import_keras

    module = write_module(folder, name, source)
    keras = import_keras(backend)
    keras.utils.set_random_seed(0)
    return module, keras


# mylayers.py: a custom activation layer registered with Keras (package "mylayers")
SCALED_SWISH = '''import keras


@keras.saving.register_keras_serializable(package="mylayers")
class ScaledSwish(keras.layers.Layer):
    def __init__(self, scale=1.5, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale

    def call(self, x):
        return x * keras.ops.sigmoid(self.scale * x)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}
'''
