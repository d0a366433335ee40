"""Files that exhaust nothing (issue 16, items 6 and 7): a 15.9 MB zip with a member that honestly declares
15 GiB, and a 13 KB .keras whose config declares a 2**31-unit Dense layer. Both are refused from what
they declare, in well under a second, with ResourceError naming what they asked for: before anything
is inflated or allocated. Every load runs in a child under RLIMIT_AS (LoadWorker), so that the code as
it was (which inflated and allocated) failed in the child, never in pytest."""
from __future__ import annotations

import json
import time
import zipfile
from pathlib import Path

import pytest

from ._bombs import copy_with_bomb
from ._build import build_keras, build_pt2
from ._hostile import in_child

MEMORY = 12 * 1024**3  # the LoadWorker's RLIMIT_AS


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bomb_sources")
    return {"keras": build_keras(folder / "tiny.keras"), "pt2": build_pt2(folder / "tiny.pt2")}


@pytest.fixture
def worker(load_worker, sources):
    """The LoadWorker, already started (TensorFlow and torch imported), so a load's time is its own."""
    for path in sources.values():
        assert load_worker.load(path)["ok"]
    return load_worker


def _timed_load(worker, path: Path, inspect: bool = True) -> tuple[dict, float]:
    start = time.monotonic()
    result = worker.load(path, inspect=inspect)
    return result, time.monotonic() - start


@pytest.mark.parametrize("fmt, member, replace", [
    ("pt2", "tiny/extra/big", False),               # torch.export.load reads every extra/ member whole
    ("pt2", "tiny/data/weights/weight_0", True),    # a raw tensor torch would inflate
    ("keras", "config.json", True),                 # modelkit reads config.json itself, before Keras
    ("keras", "assets/big", False),
])
@pytest.mark.slow
def test_fifteen_gib_member_is_refused_from_its_declared_size(sources, tmp_path, worker, fmt, member, replace):
    bomb = copy_with_bomb(sources[fmt], tmp_path / f"bomb.{fmt}", member, 15, replace)
    assert bomb.stat().st_size < 16_000_000
    result, seconds = _timed_load(worker, bomb)
    assert result.get("type") == "ResourceError", result
    assert "inflating this archive needs 15.0 GiB" in result["message"] and "Refused before anything was read" \
        in result["message"], result
    assert seconds < 10, f"took {seconds:.0f} s: the member was inflated"


def test_the_scans_convert_and_torch_use_never_inflate_a_bomb(sources, tmp_path):
    """`modelkit convert` reads config.json with check_keras_archive, the torch engines scan with
    check_torch_archive; both used to read whole members (an untyped MemoryError under a memory limit)."""
    keras_bomb = copy_with_bomb(sources["keras"], tmp_path / "bomb.keras", "config.json", 15, replace=True)
    pt2_bomb = copy_with_bomb(sources["pt2"], tmp_path / "bomb.pt2", "tiny/data/sample_inputs/model.pt", 15,
                              replace=True)
    code = ("import time\nfrom modelkit.keras_io.files import check_keras_archive\n"
            "from modelkit.safety.pickles import check_torch_archive\n"
            f"for check, path in ((check_keras_archive, {str(keras_bomb)!r}), (check_torch_archive, "
            f"{str(pt2_bomb)!r})):\n"
            "    start = time.monotonic()\n    try:\n        check(path)\n        print('LOADED')\n"
            "    except BaseException as e:\n        print(type(e).__name__, round(time.monotonic() - start))\n")
    proc = in_child(code, memory=MEMORY)
    lines = proc.stdout.split()
    assert proc.returncode == 0 and lines[0::2] == ["ResourceError", "ResourceError"], proc.stdout + proc.stderr[-500:]
    assert all(int(s) < 10 for s in lines[1::2]), proc.stdout


def _with_config(src: Path, dest: Path, edit) -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "config.json":
                cfg = json.loads(data)
                edit(cfg)
                data = json.dumps(cfg).encode()
            zout.writestr(item, data)
    return dest


def _layers(cfg: dict) -> list[dict]:
    return cfg["config"]["layers"]


def _embedding_model(path: Path) -> Path:
    import keras

    x = keras.Input((3,), dtype="int32", name="ids")
    y = keras.layers.Embedding(10, 4, name="embed")(x)
    keras.Model(x, keras.layers.Flatten(name="flat")(y)).save(path)
    return path


def _conv_model(path: Path) -> Path:
    import keras

    x = keras.Input((8, 8, 3), name="img")
    y = keras.layers.Conv2D(4, 3, name="conv")(x)
    keras.Model(x, keras.layers.GlobalAveragePooling2D(name="pool")(y)).save(path)
    return path


def _set(layer_class: str, **values):
    def edit(cfg: dict) -> None:
        for layer in _layers(cfg):
            if layer["class_name"] == layer_class:
                layer["config"].update(values)
    return edit


@pytest.mark.parametrize("build, edit, named", [
    (None, _set("Dense", units=2**31), r"layer 'probs' \(Dense\): 2147483648 units x 4 inputs"),
    (_embedding_model, _set("Embedding", input_dim=2**31), r"layer 'embed' \(Embedding\): input_dim 2147483648 x "
                                                           r"output_dim 4"),
    (_conv_model, _set("Conv2D", filters=2**30), r"layer 'conv' \(Conv2D\): 1073741824 filters x kernel 9 x 3 "
                                                 r"channels"),
])
def test_huge_layer_in_config_is_refused_before_keras_builds_it(sources, tmp_path, worker, build, edit, named):
    import re

    src = sources["keras"] if build is None else build(tmp_path / "src.keras")
    path = _with_config(src, tmp_path / "huge.keras", edit)
    for inspect in (False, True):
        result, seconds = _timed_load(worker, path, inspect)
        assert result.get("type") == "ResourceError", result
        assert re.search(f"refused to load: its config declares weights of about .*{named}", result["message"]), result
        assert seconds < 10, f"took {seconds:.0f} s: Keras built the layer"
