"""Models for tests: trained in a child process, a framework-free ONNX file, torch conversions shared
across test files."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def train_in_child(model: str, backend: str, out: Path, epochs: int = 3) -> Path:
    from modelkit import _child

    _child.run("modelkit.core.train:train", {"model": model, "data": "digits", "epochs": epochs,
                                              "backend": backend, "out": str(out), "force": True,
                                              "verbose": False}, backend=backend, quiet=True)
    return out


def any_size_images(seed: int = 0) -> tuple[Any, Any, Any]:
    """(keras under TensorFlow, keras.layers, an 'image' Input of any height and width, RGB), seeded: the start
    of the any-size image models tests build (a Resizing, an UpSampling2D...)."""
    from modelkit._backend import import_keras

    keras = import_keras("tensorflow")
    keras.utils.set_random_seed(seed)
    return keras, keras.layers, keras.Input((None, None, 3), name="image")


def make_tiny_keras(path: Path) -> Path:
    """A one-Dense .keras model: input 'x' (?, 4) -> softmax 'probs' (?, 3), under the default backend."""
    from modelkit._backend import import_keras

    keras = import_keras()
    inp = keras.Input((4,), name="x")
    keras.Model(inp, keras.layers.Dense(3, activation="softmax", name="probs")(inp)).save(path)
    return path


def make_masked_lstm(path: Path, units: int, classes: int) -> tuple[Any, np.ndarray]:
    """Masking -> LSTM(units) -> softmax(classes) on (?, 8, 8), seeded; saved to path. Returns the Keras model and
    40 seeded rows of input (tf2onnx writes this as an ONNX Loop, XNNPACK refuses its full-int8 unrolled form)."""
    from modelkit._backend import import_keras

    keras = import_keras()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8)), keras.layers.Masking(0.0), keras.layers.LSTM(units),
                              keras.layers.Dense(classes, activation="softmax")])
    model.save(path)
    return model, np.random.default_rng(0).random((40, 8, 8), dtype=np.float32)


def masked_mean_int8_tflite(path: Path) -> tuple[Path, Any]:
    """An int8 TFLite review model (ids -> Embedding(mask_zero=True) -> masked mean -> Dense), made by TFLite's
    own converter: a row of padding only divides by a zero count, which TFLite's int8 DIV refuses for the whole
    call. (model path, its float Keras model)."""
    import tensorflow as tf

    from modelkit._backend import import_keras

    keras = import_keras("tensorflow")
    keras.utils.set_random_seed(0)
    ids = keras.Input((6,), dtype="int32", name="ids")
    pooled = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(10, 4, mask_zero=True)(ids))
    model = keras.Model(ids, keras.layers.Dense(2, name="score")(pooled))
    rows = np.random.default_rng(0).integers(1, 10, (32, 6)).astype(np.int32)
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([r[None]] for r in rows)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    path.write_bytes(conv.convert())
    return path, model


def make_tiny_onnx(path: Path, weight_scale: float = 1.0, batch: int | str = "batch") -> Path:
    """A real ONNX model without any framework: probs = softmax(x @ W + b), x: (batch, 4) float32 (`batch`: a
    number fixes it)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = (rng.standard_normal((4, 3)) * weight_scale).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probs"], axis=-1)],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [batch, 3])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


_CONVERTED: dict[str, dict[str, Any]] = {}


def torch_denoiser_onnx(path: Path, dynamo: bool = False) -> Path:
    """A user's own torch.onnx export of a denoiser of any image size (nc72): PixelUnshuffle(2), two 3x3
    convolutions, PixelShuffle(2); batch, height and width as dynamic axes. It takes even sides only."""
    import torch

    torch.manual_seed(0)
    body = torch.nn.Sequential(torch.nn.PixelUnshuffle(2), torch.nn.Conv2d(12, 8, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.Conv2d(8, 12, 3, padding=1), torch.nn.PixelShuffle(2)).eval()
    torch.onnx.export(body, (torch.rand(1, 3, 16, 16),), str(path), input_names=["img"], output_names=["clean"],
                      dynamic_axes={"img": {0: "n", 2: "h", 3: "w"}, "clean": {0: "n", 2: "h2", 3: "w2"}},
                      dynamo=dynamo)
    return path


def converted_to_torch(src: Path, tmp_path_factory) -> dict[str, Any]:
    """`src` converted to torchscript and pt2 once per session: both edges run in one torch child.

    Shared with tests/convert/test_keras_pt2.py and tests/runtime/test_torch_engines.py (imported),
    so the test files together start one torch child process per source model.
    """
    key = str(src)
    if key not in _CONVERTED:
        out = tmp_path_factory.mktemp(f"torch_{Path(src).stem}")
        import modelkit

        _CONVERTED[key] = {r.format: r for r in modelkit.convert(src, "torchscript,pt2", out_dir=out)}
    return _CONVERTED[key]


def train_binary(kind: str, folder: Path) -> tuple[Path, Path]:
    """A small model judged by binary accuracy, trained in a child (TensorFlow) on generated data: "tagger" (4
    sigmoid tags), "logit" (one logit), "wide" (a sigmoid, then a regression head); (model, eval .npz)."""
    return train_binaries((kind,), folder)[kind]


def train_binaries(kinds: tuple[str, ...], folder: Path) -> dict[str, tuple[Path, Path]]:
    """train_binary of each kind, all in one child: {kind: (model, eval .npz)}."""
    return _trained(_binary_code, kinds, folder)


def _trained(code_of: Any, kinds: tuple[str, ...], folder: Path) -> dict[str, tuple[Path, Path]]:
    """The scripts `code_of(kind, folder)` run one after another in one TensorFlow child (one import of it)."""
    _train_tf("\n".join(code_of(kind, folder) for kind in kinds))
    return {kind: (folder / f"{kind}.keras", folder / f"{kind}_eval.npz") for kind in kinds}


def _binary_code(kind: str, folder: Path) -> str:
    return f"""
import numpy as np, keras
keras.utils.set_random_seed(0)
rng = np.random.default_rng(0)
x = rng.random((768, 8), dtype=np.float32)
L = keras.layers
inp = keras.Input((8,), name="x")
h = L.Dense(32, activation="relu")(inp)
if "{kind}" == "tagger":  # four independent tags: x[:, i] > 0.5
    y = (x[:, :4] > 0.5).astype(np.int64)
    m = keras.Model(inp, L.Dense(4, activation="sigmoid", name="tags")(h))
    m.compile("adam", "binary_crossentropy")
elif "{kind}" == "logit":  # one logit, from_logits training
    y = (x[:, 0] + x[:, 1] > 1).astype(np.int64)
    m = keras.Model(inp, L.Dense(1, name="logit")(h))
    m.compile("adam", keras.losses.BinaryCrossentropy(from_logits=True))
else:  # wide & deep: a sigmoid first, then a regression head
    y = (x[:, 0] + x[:, 1] > 1).astype(np.int64)
    m = keras.Model(inp, [L.Dense(1, activation="sigmoid", name="p")(h), L.Dense(1, name="v")(h)])
    m.compile("adam", ["binary_crossentropy", "mse"])
targets = [y[:512], x[:512, :1] * 3] if "{kind}" == "wide" else y[:512]
m.fit(x[:512], targets, epochs=60, batch_size=32, verbose=0)
m.save(r"{folder / kind}.keras")
np.savez(r"{folder / kind}_eval.npz", x=x[512:], y=y[512:])
"""


def train_dense(kind: str, folder: Path) -> tuple[Path, Path]:
    """A small model that decides per position, trained in a child (TensorFlow) on generated data:
    "segmenter" (a per-pixel softmax over 3 classes: background, bright, dim; 12x12 images), "tokens" (a per-token
    softmax over 4 classes, any length), "masked" (the same tagger on sequences padded with id 0, which its
    Embedding(mask_zero=True) masks), "masked_steps" (a per-step regressor over frames padded with zero rows,
    which Masking masks, the padding's targets junk); (model, eval .npz of 128 rows with 'y' per position)."""
    return train_denses((kind,), folder)[kind]


def train_denses(kinds: tuple[str, ...], folder: Path) -> dict[str, tuple[Path, Path]]:
    """train_dense of each kind, all in one child: {kind: (model, eval .npz)}."""
    return _trained(_dense_code, kinds, folder)


def _dense_code(kind: str, folder: Path) -> str:
    return f"""
import numpy as np, keras
keras.utils.set_random_seed(0)
rng = np.random.default_rng(0)
L = keras.layers
loss = "sparse_categorical_crossentropy"
if "{kind}" == "segmenter":
    x = rng.random((640, 12, 12, 1), dtype=np.float32)
    y = np.digitize(x[..., 0], [0.33, 0.66]).astype(np.int64)  # (N, 12, 12) class ids
    inp = keras.Input((12, 12, 1), name="image")
    h = L.Conv2D(8, 3, padding="same", activation="relu")(inp)
    out = L.Conv2D(3, 1, activation="softmax", name="mask")(L.Concatenate()([h, inp]))
elif "{kind}" == "masked":  # padded to 10 tokens with id 0, which the Embedding masks
    x = rng.integers(1, 20, (640, 10)).astype(np.int64)
    x[np.arange(10) >= rng.integers(3, 11, (640, 1))] = 0
    y = (x % 4).astype(np.int64)  # padding labelled 0 too, as the newcomer's was
    inp = keras.Input((10,), dtype="int64", name="ids")
    out = L.Dense(4, activation="softmax", name="tags")(L.Embedding(20, 16, mask_zero=True)(inp))
elif "{kind}" == "masked_steps":  # a per-step regressor over frames padded with zero rows, which Masking masks
    x = rng.random((640, 8, 3), dtype=np.float32)
    x[np.arange(8) >= rng.integers(3, 9, (640, 1))] = 0.0
    y = np.where((x == 0).all(-1), 9.0, x.sum(-1)).astype(np.float32)  # (N, T); padding holds junk (9.0)
    inp = keras.Input((8, 3), name="frames")
    out = L.Dense(1, name="level")(L.Dense(16, activation="relu")(L.Masking(0.0)(inp)))
    loss = "mse"
else:
    x = rng.integers(1, 20, (640, 10)).astype(np.int64)
    y = (x % 4).astype(np.int64)  # (N, T) class ids
    inp = keras.Input((None,), dtype="int64", name="ids")
    out = L.Dense(4, activation="softmax", name="tags")(L.Embedding(20, 16)(inp))
m = keras.Model(inp, out)
m.compile("adam", loss)
m.fit(x[:512], y[:512, ..., None] if loss == "mse" else y[:512], epochs=40, batch_size=32, verbose=0)
m.save(r"{folder / kind}.keras")
np.savez(r"{folder / kind}_eval.npz", x=x[512:], y=y[512:])
"""


def _train_tf(code: str) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=600)


def trained_once(tmp_path_factory: Any, worker_id: str, dest: Path, model: str, backend: str,
                 epochs: int = 3) -> Path:
    """`train_in_child(model, backend, ...)` run once for all pytest-xdist workers of this run (in the run's own
    base folder, under a file lock), then copied with its manifest to `dest`: every worker gets the same model in
    its own folder, so a test that writes beside it writes in its worker's folder as before."""
    import shutil

    from filelock import FileLock

    from modelkit.formats import manifest_path

    base = tmp_path_factory.getbasetemp()
    shared = (base if worker_id == "master" else base.parent) / "trained-once"  # the run's folder above the workers'
    shared.mkdir(exist_ok=True)
    made = shared / dest.name
    with FileLock(str(made) + ".lock"):
        if not manifest_path(made).exists():  # written last: a model whose training was cut short is trained again
            train_in_child(model, backend, made, epochs)
    shutil.copyfile(made, dest)
    shutil.copyfile(manifest_path(made), manifest_path(dest))
    return dest


def trained_on_digits(model: Any, x: np.ndarray, y: np.ndarray, folder: Path, name: str,
                      epochs: int) -> tuple[Path, Path, Path]:
    """`model` (a classifier of the digits `x`) trained on the first 1400, saved as folder/name.keras with a
    calibration .npz (the first 200) and a labelled test .npz (the rest): what an int8 conversion takes."""
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x[:1400], y[:1400], epochs=epochs, verbose=0)
    model.save(folder / f"{name}.keras")
    np.savez(folder / "calib.npz", x=x[:200])
    np.savez(folder / "test.npz", x=x[1400:], y=y[1400:])
    return folder / f"{name}.keras", folder / "calib.npz", folder / "test.npz"
