"""A model that draws random numbers at inference (nc51: a VAE encoder sampling its latent with keras.random; a
layer adding noise) cannot be checked against: its eight formats failed with seven unrelated reasons (tf2onnx "No
Op registered for StatelessRandomNormalV2", torch.export on the draw's shape, a TorchScript trace "baked the
batch") and SavedModel passed by the luck of a shared seed state. Each format is now refused with one line that
names the outputs that vary and how to keep the ones that do not (modelkit.converters.determinism)."""
from __future__ import annotations

import pytest

import modelkit
from modelkit.errors import RandomModelError
from tests.helpers.user_code import keras_beside, write_module

SAMPLING = '''import keras


@keras.saving.register_keras_serializable(package="vae")
class Sampling(keras.layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seed_generator = keras.random.SeedGenerator(1337)

    def call(self, inputs):
        z_mean, z_log_var = inputs
        eps = keras.random.normal(keras.ops.shape(z_mean), seed=self.seed_generator)
        return z_mean + keras.ops.exp(0.5 * z_log_var) * eps
'''


def _encoder(keras, sampling):
    keras.utils.set_random_seed(0)
    x = keras.Input((8,), name="x")
    h = keras.layers.Dense(16, activation="relu")(x)
    z_mean, z_log_var = keras.layers.Dense(2, name="z_mean")(h), keras.layers.Dense(2, name="z_log_var")(h)
    return keras.Model(x, [z_mean, z_log_var, sampling.Sampling(name="z")([z_mean, z_log_var])])


@pytest.mark.slow
def test_a_sampling_encoder_is_refused_once_per_format_naming_the_outputs_to_keep(tmp_path):
    from modelkit._backend import import_keras

    sampling = write_module(tmp_path, "vae_layers", SAMPLING)
    keras = import_keras("tensorflow")
    encoder = _encoder(keras, sampling)
    encoder.save(tmp_path / "encoder.keras")
    with pytest.raises(RandomModelError) as info:
        modelkit.convert(tmp_path / "encoder.keras", "onnx,saved_model", out_dir=tmp_path / "out",
                         imports=[str(tmp_path / "vae_layers.py")])
    message = str(info.value)
    assert "onnx, saved_model: encoder.keras: output(s) 'z' differ between two runs on the same inputs" in message
    assert "for n in ('z_mean', 'z_log_var')" in message and "--no-verify" in message
    assert "route" not in message  # the source's refusal: no other route was tried
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
    # the way out the message gives: the deterministic outputs as a model of their own convert
    keep = keras.Model(encoder.inputs, [encoder.get_layer(n).output for n in ("z_mean", "z_log_var")])
    keep.save(tmp_path / "mean.keras")
    (r,) = modelkit.convert(tmp_path / "mean.keras", "onnx", out_dir=tmp_path / "out")
    assert r.parity["ok"]


NOISY = '''import keras


@keras.saving.register_keras_serializable(package="noisy")
class Jitter(keras.layers.Layer):
    def call(self, x):
        return x + keras.random.uniform(keras.ops.shape(x), -0.1, 0.1)
'''


def test_a_model_adding_noise_at_inference_is_refused(tmp_path):
    from modelkit._backend import import_keras

    noisy = write_module(tmp_path, "noisy", NOISY)
    keras = import_keras("tensorflow")
    keras.utils.set_random_seed(0)
    x = keras.Input((6,), name="x")
    h = noisy.Jitter()(keras.layers.Dense(32, activation="relu")(x))
    keras.Model(x, keras.layers.Dense(3, name="scores")(h)).save(tmp_path / "noisy.keras")
    with pytest.raises(RandomModelError, match=r"^noisy.keras: output\(s\) 'scores' differ between two runs .* "
                                               r"training=True\), so no artifact can be checked against it or "
                                               r"convert unchecked with --no-verify$"):
        modelkit.convert(tmp_path / "noisy.keras", "tflite", out_dir=tmp_path / "out",
                         imports=[str(tmp_path / "noisy.py")])


@pytest.mark.slow
def test_augmentation_layers_draw_only_in_training_and_convert(tmp_path):
    """nc58: the usual augmentation block inside an image model (flip, rotation, zoom, translation, contrast,
    brightness, erasing, blur) is the identity at inference: not refused, and every artifact matches."""
    from modelkit._backend import import_keras

    keras = import_keras("tensorflow")
    L = keras.layers
    keras.utils.set_random_seed(0)
    aug = keras.Sequential([L.RandomFlip("horizontal"), L.RandomRotation(0.05), L.RandomZoom(0.1),
                            L.RandomTranslation(0.05, 0.05), L.RandomContrast(0.1),
                            L.RandomBrightness(0.1, value_range=(0, 1)), L.RandomErasing(value_range=(0, 1)),
                            L.RandomGaussianBlur(value_range=(0, 1))], name="augment")
    x = keras.Input((12, 12, 3), name="image")
    h = L.GlobalAveragePooling2D()(L.Conv2D(4, 3, activation="relu")(aug(x)))
    keras.Model(x, L.Dense(3, activation="softmax", name="probs")(h)).save(tmp_path / "aug.keras")
    results = modelkit.convert(tmp_path / "aug.keras", "onnx,tflite", out_dir=tmp_path / "out")
    assert all(r.parity["ok"] and r.parity["outputs"][0]["max_abs"] < 1e-5 for r in results)


CENTER = '''import keras


@keras.saving.register_keras_serializable(package="center")
class Center(keras.layers.Layer):
    def call(self, x):
        return x - keras.ops.mean(x)  # no axis: the mean of the whole batch, a common slip
'''


@pytest.mark.slow
def test_a_model_whose_rows_depend_on_their_batch_is_converted_said_and_served_one_request_per_call(tmp_path, capfd):
    """A layer reducing over the whole batch at inference (a mean without an axis; Keras' MelSpectrogram clips to
    its batch's max): the artifact computes the same, so it converts, but one row's answer depends on what is
    batched with it. Said once, recorded in the manifest (also of a later hop), and the server never merges
    requests for it."""
    import numpy as np

    from modelkit.serving.batcher import batchable

    center, keras = keras_beside(tmp_path, "center", CENTER)
    x = keras.Input((4,), name="x")
    keras.Model(x, keras.layers.Dense(3, name="y")(center.Center()(x))).save(tmp_path / "c.keras")
    keras.Model(x, keras.layers.Dense(3, name="y")(x)).save(tmp_path / "plain.keras")
    results = modelkit.convert(tmp_path / "c.keras", "onnx,openvino", out_dir=tmp_path / "out",
                               imports=[str(tmp_path / "center.py")])
    said = capfd.readouterr().err
    assert "output(s) 'y' of a row depend on the other rows of its batch" in said
    for r in results:
        assert modelkit.manifest.read(r.path).extra["rows_coupled"] == ["y"]
        assert not batchable(modelkit.load(r.path))
    feed = np.random.default_rng(0).random((2, 4), dtype=np.float32)
    onnx = modelkit.load(next(r.path for r in results if r.format == "onnx"))
    assert not np.allclose(onnx.predict(feed)["y"][:1], onnx.predict(feed[:1])["y"])  # what the note is about
    (plain,) = modelkit.convert(tmp_path / "plain.keras", "onnx", out_dir=tmp_path / "plain")
    assert "rows_coupled" not in modelkit.manifest.read(plain.path).extra and batchable(modelkit.load(plain.path))


ROUNDING = '''import keras


@keras.saving.register_keras_serializable(package="rounding")
class BatchRounding(keras.layers.Layer):
    def call(self, x):
        return x + 2e-6 * keras.ops.sum(x)  # rows apart by a few 1e-6, as a kernel summing a batch in another order
'''


def test_rows_apart_by_rounding_alone_are_not_coupled(tmp_path, capfd):
    """nc109: a causal Transformer on TensorFlow gave logits 1e-5 apart (of 14.6) for a row run alone and in a batch
    of 2 (the matrix kernels sum in another order), and was said to couple its rows and served one request per
    call. Rows count as coupled only when they move by more than 1e-4 of the output's largest magnitude."""
    from modelkit.serving.batcher import batchable

    rounding, keras = keras_beside(tmp_path, "rounding", ROUNDING)
    x = keras.Input((4,), name="x")
    keras.Model(x, keras.layers.Dense(3, name="y")(rounding.BatchRounding()(x))).save(tmp_path / "r.keras")
    (r,) = modelkit.convert(tmp_path / "r.keras", "onnx", out_dir=tmp_path / "out",
                            imports=[str(tmp_path / "rounding.py")])
    assert "depend on the other rows" not in capfd.readouterr().err
    assert "rows_coupled" not in modelkit.manifest.read(r.path).extra and batchable(modelkit.load(r.path))
