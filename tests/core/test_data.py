"""modelkit.core.data: the shipped digits split and its shaping into each zoo model's inputs."""
from __future__ import annotations

import numpy as np
import pytest

from modelkit.core import data
from modelkit.core.zoo import MODELS
from modelkit.errors import ModelkitError, TrainingError


@pytest.fixture(scope="module")
def ds() -> data.Dataset:
    return data.load_digits_split(seed=0)


def test_split_shapes_dtypes_and_range(ds: data.Dataset) -> None:
    assert ds.x_train.shape == (1437, 8, 8, 1) and ds.x_test.shape == (360, 8, 8, 1)
    assert ds.x_train.dtype == np.float32 and ds.x_test.dtype == np.float32
    assert ds.y_train.dtype == np.int64 and ds.y_test.shape == (360,)
    both = np.concatenate([ds.x_train, ds.x_test])
    assert both.min() == 0.0 and both.max() == 1.0
    assert set(np.unique(ds.y_train)) == set(range(10)) and ds.num_classes == 10


def test_split_is_stratified(ds: data.Dataset) -> None:
    labels = np.concatenate([ds.y_train, ds.y_test])
    overall = np.bincount(labels) / len(labels)
    in_test = np.bincount(ds.y_test, minlength=10) / len(ds.y_test)
    assert np.abs(in_test - overall).max() < 0.005


def test_split_is_seeded(ds: data.Dataset) -> None:
    again = data.load_digits_split(seed=0)
    np.testing.assert_array_equal(again.x_test, ds.x_test)
    np.testing.assert_array_equal(again.y_train, ds.y_train)
    other = data.load_digits_split(seed=1)
    assert not np.array_equal(other.y_test, ds.y_test)
    assert len(data.load_digits_split(test_size=0.5).y_test) == 899


def test_bad_test_size() -> None:
    with pytest.raises(TrainingError, match="test_size"):
        data.load_digits_split(test_size=1.5)


def test_model_inputs_mlp_and_cnn(ds: data.Dataset) -> None:
    x = ds.x_test[:5]
    mlp = data.model_inputs("mlp", x)
    assert list(mlp) == ["features"] and mlp["features"].shape == (5, 64)
    np.testing.assert_array_equal(mlp["features"][2], x[2].ravel())
    cnn = data.model_inputs("cnn", x)
    assert list(cnn) == ["image"] and cnn["image"].shape == (5, 8, 8, 1) and cnn["image"].dtype == np.float32


def test_model_inputs_and_targets_multi_io(ds: data.Dataset) -> None:
    x = ds.x_test[:5]
    feed = data.model_inputs("multi_io", x)
    assert sorted(feed) == ["features", "image"] and feed["features"].shape == (5, 8)
    assert feed["features"][1, 3] == pytest.approx(float(x[1, 3, :, 0].mean()))
    y = data.model_targets("multi_io", x, ds.y_test[:5])
    assert sorted(y) == ["intensity", "probs"]
    np.testing.assert_array_equal(y["probs"], ds.y_test[:5])
    assert y["intensity"].shape == (5, 1) and y["intensity"][4, 0] == pytest.approx(float(x[4].mean()))
    np.testing.assert_array_equal(data.model_targets("cnn", x, ds.y_test[:5]), ds.y_test[:5])


def test_model_inputs_mobilenetv2_upsamples_to_rgb(ds: data.Dataset) -> None:
    x = ds.x_test[:3]
    img = data.model_inputs("mobilenetv2", x)["image"]
    assert img.shape == (3, 32, 32, 3) and img.dtype == np.float32
    np.testing.assert_array_equal(img[..., 0], img[..., 2])
    np.testing.assert_array_equal(img[:, ::4, ::4, 1], x[..., 0])  # nearest neighbour, factor 4
    np.testing.assert_array_equal(img[:, 7, 30, 0], x[:, 1, 7, 0])
    assert data.model_inputs("mobilenetv2", x, image_size=224)["image"].shape == (3, 224, 224, 3)


def test_model_inputs_cover_every_model(ds: data.Dataset) -> None:
    for name in MODELS:
        feed = data.model_inputs(name, ds.x_test[:2])
        assert all(a.shape[0] == 2 and a.dtype == np.float32 for a in feed.values())
    seq = data.model_inputs("transformer", ds.x_test[:2])["sequence"]
    assert seq.shape == (2, 8, 8)
    np.testing.assert_array_equal(seq[1, 3], ds.x_test[1, 3, :, 0])  # time step 3 = image row 3
    recon = data.model_targets("autoencoder", ds.x_test[:2], ds.y_test[:2])
    np.testing.assert_array_equal(recon, ds.x_test[:2])  # the autoencoder's target is its input


def test_model_inputs_errors(ds: data.Dataset) -> None:
    with pytest.raises(TrainingError, match="valid models: mlp, cnn, multi_io, mobilenetv2, lstm, gru"):
        data.model_inputs("resnet", ds.x_test[:2])
    with pytest.raises(TrainingError, match=r"\(N, H, W, 1\)"):
        data.model_inputs("cnn", np.zeros((2, 8, 8, 3), np.float32))


def test_test_split_matches_the_held_out_split(ds: data.Dataset) -> None:
    feed, labels = data.test_split("digits", "cnn", seed=0)
    np.testing.assert_array_equal(labels, ds.y_test)
    np.testing.assert_array_equal(feed["image"], ds.x_test)


def test_test_split_unknown_data() -> None:
    with pytest.raises(TrainingError, match="unknown data set 'mnist'; valid data sets: digits") as info:
        data.test_split("mnist", "cnn")
    assert isinstance(info.value, ModelkitError)
