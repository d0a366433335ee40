"""Tiny artifacts of every format computing the same function, probs = softmax(x @ W + b) with x of
shape (batch, 4), built directly with each framework (seconds, no conversion children)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tests.helpers import make_tiny_onnx

SIG = {"inputs": [{"name": "x", "shape": [None, 4], "dtype": "float32"}],
       "outputs": [{"name": "probs", "shape": [None, 3], "dtype": "float32"}]}


def weights() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal(3).astype(np.float32)


def expected(x: np.ndarray) -> np.ndarray:
    w, b = weights()
    z = x.astype(np.float64) @ w + b
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def build_keras(path: Path) -> Path:
    import keras

    w, b = weights()
    x = keras.Input((4,), name="x")
    dense = keras.layers.Dense(3, activation="softmax", name="probs")
    model = keras.Model(x, dense(x))
    dense.set_weights([w, b])
    model.save(path)
    return path


def _tf_module():
    import tensorflow as tf

    w, b = weights()

    class Tiny(tf.Module):
        def __init__(self):
            super().__init__()
            self.w, self.b = tf.Variable(w), tf.Variable(b)

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
        def serve(self, x):
            return {"probs": tf.nn.softmax(tf.matmul(x, self.w) + self.b)}

    return Tiny()


def build_saved_model(path: Path) -> Path:
    import tensorflow as tf

    m = _tf_module()
    tf.saved_model.save(m, str(path), signatures={"serving_default": m.serve})
    return path


def build_tflite(path: Path, saved_model: Path) -> Path:
    import tensorflow as tf

    path.write_bytes(tf.lite.TFLiteConverter.from_saved_model(str(saved_model)).convert())
    return path


def _torch_module():
    import torch

    w, b = weights()

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.from_numpy(w), requires_grad=False)
            self.b = torch.nn.Parameter(torch.from_numpy(b), requires_grad=False)

        def forward(self, x):
            return (torch.softmax(x @ self.w + self.b, -1),)

    return Tiny().eval()


def build_torchscript(path: Path) -> Path:
    import torch

    traced = torch.jit.trace(_torch_module(), torch.zeros(2, 4))
    traced.save(str(path), _extra_files={"modelkit_signature.json": json.dumps(SIG)})
    return path


def build_pt2(path: Path) -> Path:
    import torch

    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    ep = torch.export.export(_torch_module(), (torch.zeros(2, 4),), dynamic_shapes=({0: batch},))
    torch.export.save(ep, str(path), extra_files={"modelkit_signature.json": json.dumps(SIG)})
    return path


def build_onnx(path: Path) -> Path:
    return make_tiny_onnx(path)


def build_all(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = {"onnx": build_onnx(folder / "tiny.onnx"), "keras": build_keras(folder / "tiny.keras"),
           "saved_model": build_saved_model(folder / "tiny_saved_model")}
    out["tflite"] = build_tflite(folder / "tiny.tflite", out["saved_model"])
    out["torchscript"] = build_torchscript(folder / "tiny.torchscript.pt")
    out["pt2"] = build_pt2(folder / "tiny.pt2")
    return out


def build_openvino(folder: Path, onnx_path: Path) -> Path:
    import modelkit

    (r,) = modelkit.convert(onnx_path, "openvino", out_dir=folder, force=True)
    return Path(r.path)


def build_executorch(folder: Path, keras_path: Path) -> Path:
    """The tiny Keras model as a .pte (torch.export, lowered to XNNPACK, in a torch child: a real program with
    the signature inside it, as users get one)."""
    import modelkit

    (r,) = modelkit.convert(keras_path, "executorch", out_dir=folder, force=True)
    return Path(r.path)


def build_tvm(folder: Path, onnx_path: Path) -> Path:
    import modelkit

    (r,) = modelkit.convert(onnx_path, "tvm", out_dir=folder, force=True)
    return Path(r.path)
