"""Data sets that ship offline, and their shaping into the inputs and targets of the zoo models.

The shipped data set is scikit-learn's bundled `load_digits` (1,797 8x8 grey images of the digits 0-9):
real data, installed with scikit-learn, and nothing is ever downloaded. scikit-learn is imported
inside the functions so that `modelkit train --help` stays fast. Users' own data come as a .npz file
(arrays x, y and optionally x_test, y_test; loaded without pickles) or a .csv file with a header and
a label column (see modelkit.core.data_files).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import TrainingError
from .catalog import MODELS

# name -> one-line description (shown by `modelkit train --help`)
DATASETS: dict[str, str] = {
    "digits": "scikit-learn's bundled 8x8 hand-written digits (1,797 images, 10 classes; offline)",
}

MOBILENET_IMAGE_SIZE = 32  # MobileNetV2 needs at least 32x32 inputs
MODEL_NAMES = tuple(MODELS)


@dataclass(frozen=True)
class Dataset:
    """A train/test split of images (float32, (N, 8, 8, 1), in [0, 1]) and int64 labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def num_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_test.max())) + 1


def check_data(name: str) -> str:
    """Return `name` if it is a known data set or an existing .npz / .csv file, else raise TrainingError."""
    from .data_files import SUFFIXES, is_data_file

    if name in DATASETS:
        return name
    if is_data_file(name):
        if not Path(name).is_file():
            raise TrainingError(f"data file not found: {name}")
        return name
    raise TrainingError(f"unknown data set '{name}'; valid data sets: {', '.join(DATASETS)}, "
                        f"or a path to a {' / '.join(SUFFIXES)} file")


def load_digits_split(seed: int = 0, test_size: float = 0.2) -> Dataset:
    """The digits data, split into train and test sets stratified by label and seeded (deterministic)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if not 0.0 < test_size < 1.0:
        raise TrainingError(f"test_size must be between 0 and 1, got {test_size}")
    bunch = load_digits()
    # pixel values are integers 0..16
    images = (bunch.images.astype(np.float32) / np.float32(16.0))[..., None]
    labels = bunch.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(images, labels, test_size=test_size,
                                                        random_state=seed, stratify=labels)
    return Dataset(np.ascontiguousarray(x_train), y_train, np.ascontiguousarray(x_test), y_test)


def load(data: str, seed: int = 0, label_column: str = "label") -> Dataset:
    """A data set by name (see DATASETS), or a user's .npz / .csv file."""
    check_data(data)
    if data in DATASETS:
        return load_digits_split(seed=seed)
    from .data_files import load_file

    return load_file(data, seed=seed, label_column=label_column)


def _check_images(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim == 2 and images.shape[1] == 64:  # flattened 8x8 images (e.g. from a .csv)
        images = images.reshape(len(images), 8, 8)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] != 1:
        raise TrainingError(f"expected grey images of shape (N, H, W, 1), got shape {images.shape}")
    return images.astype(np.float32, copy=False)


def upsample(images: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of (N, H, W, C) images to (N, size, size, C)."""
    h, w = images.shape[1:3]
    rows = np.arange(size) * h // size
    cols = np.arange(size) * w // size
    return images[:, rows][:, :, cols]


def row_means(images: np.ndarray) -> np.ndarray:
    """Mean intensity of each image row: (N, H, W, 1) -> (N, H). The second input of multi_io."""
    return _check_images(images).mean(axis=(2, 3)).astype(np.float32)


def mean_intensity(images: np.ndarray) -> np.ndarray:
    """Mean pixel intensity of each image, shape (N, 1): the regression target of multi_io."""
    return _check_images(images).mean(axis=(1, 2, 3)).astype(np.float32)[:, None]


def model_inputs(model_name: str, images: np.ndarray, *,
                 image_size: int = MOBILENET_IMAGE_SIZE) -> dict[str, np.ndarray]:
    """The input dict a zoo model expects, keyed by input name, made from (N, 8, 8, 1) images.

    mlp: {"features": (N, 64)}; cnn: {"image": (N, 8, 8, 1)};
    multi_io: {"image": (N, 8, 8, 1), "features": (N, 8) row means};
    mobilenetv2: {"image": (N, image_size, image_size, 3)}, upsampled and grey repeated to RGB;
    lstm, gru, transformer: {"sequence": (N, 8, 8)} (rows as time steps); separable, autoencoder: as cnn.
    """
    images = _check_images(images)
    if model_name in ("lstm", "gru", "transformer"):
        return {"sequence": np.ascontiguousarray(images[..., 0])}
    if model_name in ("separable", "autoencoder"):
        return {"image": np.ascontiguousarray(images)}
    if model_name == "mlp":
        return {"features": np.ascontiguousarray(images.reshape(len(images), -1))}
    if model_name == "cnn":
        return {"image": np.ascontiguousarray(images)}
    if model_name == "multi_io":
        return {"image": np.ascontiguousarray(images), "features": row_means(images)}
    if model_name == "mobilenetv2":
        big = upsample(images, image_size)
        return {"image": np.ascontiguousarray(np.repeat(big, 3, axis=-1))}
    raise TrainingError(f"unknown model '{model_name}'; valid models: {', '.join(MODEL_NAMES)}")


def inputs_for(model_name: str, images: np.ndarray, sig: Any = None) -> dict[str, np.ndarray]:
    """The input dict of the model a manifest's `training.model` names: a zoo model's (model_inputs), or for a
    user's builder ('file.py:build', one input) the data rows reshaped to the input of `sig` (a Signature),
    as `train` fed them: any data set `train` accepts (colour images, tables) works here too."""
    from ..keras_io.custom import is_user_model

    if not is_user_model(model_name):
        return model_inputs(model_name, images)
    if sig is None or len(sig.inputs) != 1:
        raise TrainingError(f"{model_name}: user models trained by modelkit take one input")
    spec = sig.inputs[0]
    return {spec.name: reshape_rows(np.asarray(images), tuple(spec.shape[1:]), model_name)}


def reshape_rows(rows: np.ndarray, shape: tuple[Any, ...], model: str) -> np.ndarray:
    """Data rows shaped as a user model's input (`shape` without the batch; kept as they are when open)."""
    if any(d is None for d in shape):
        return rows
    if int(np.prod(rows.shape[1:])) != int(np.prod(shape)):
        raise TrainingError(f"the data rows have shape {rows.shape[1:]} but {model} takes {shape}")
    return np.ascontiguousarray(rows.reshape((len(rows), *shape)), dtype=np.float32)


def model_targets(model_name: str, images: np.ndarray, labels: np.ndarray) -> np.ndarray | dict[str, np.ndarray]:
    """What Keras fit needs as y: the labels, or for multi_io a dict keyed by output name."""
    if model_name == "autoencoder":  # reconstructs its input
        return _check_images(images)
    labels = np.asarray(labels).astype(np.int64, copy=False)
    if model_name == "multi_io":
        return {"probs": labels, "intensity": mean_intensity(images)}
    if model_name not in MODEL_NAMES:
        raise TrainingError(f"unknown model '{model_name}'; valid models: {', '.join(MODEL_NAMES)}")
    return labels


def test_split(data: str, model_name: str, seed: int = 0, sig: Any = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The test inputs of a data set shaped for the model (inputs_for; `sig` for a user's model), and the
    integer labels.

    Used by demos and accuracy checks of converted artifacts: the same seed gives the same split that
    `train` held out.
    """
    ds = load(data, seed=seed)
    return inputs_for(model_name, ds.x_test, sig), ds.y_test


test_split.__test__ = False  # not a pytest test, despite the name
