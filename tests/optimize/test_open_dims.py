"""`modelkit optimize` on a model of open height and width (newcomer trial nc21: images of any size resized in the
model): its TVM candidate was compiled for the measured batch, which fixes every shape, and failed ("dimension 1
is dynamic"). Untuned, it is compiled again with a dynamic batch and measured on the user's own image size."""
from __future__ import annotations

import json

import numpy as np
import pytest

from modelkit import optimize

pytest.importorskip("tvm", reason="TVM is not installed (pip install 'modelkit[tvm]')")


@pytest.fixture(scope="module")
def any_size(tmp_path_factory):
    from tests.helpers.models import any_size_images

    keras, L, x = any_size_images()
    h = L.Conv2D(4, 3, padding="same", activation="relu")(L.Rescaling(1 / 255.0)(L.Resizing(16, 16)(x)))
    folder = tmp_path_factory.mktemp("anysize")
    keras.Model(x, L.Dense(3, activation="softmax", name="p")(L.GlobalAveragePooling2D()(h))).save(
        folder / "m.keras")
    rng = np.random.default_rng(0)
    np.savez(folder / "eval.npz", image=rng.uniform(0, 255, (120, 12, 20, 3)).astype(np.float32),
             y=rng.integers(0, 3, 120))
    return folder


@pytest.mark.slow
def test_an_open_size_model_gets_a_dynamic_batch_tvm_candidate_measured_on_the_users_size(any_size, tmp_path):
    r = optimize(any_size / "m.keras", data=any_size / "eval.npz", formats=("tvm",), threads=(1,), budget="60s",
                 rounds=1, out=tmp_path / "o", cache_dir=tmp_path / "c")
    tvm = {c["key"]: c for c in r.candidates}["tvm-fp32-t1"]
    assert tvm["status"] == "measured", tvm
    assert r.winner["key"] == "tvm-fp32-t1"
    lib = next((tmp_path / "o").glob("*.tvm.so"))
    shape = json.loads(lib.with_name(lib.name + ".modelkit.json").read_text())["signature"]["inputs"][0]["shape"]
    assert shape == [None, None, None, 3]
