"""keras -> executorch with open dimensions besides the batch: a sequence length (or an image's sides) stays open up
to `max_length`, planned in the program, read back by the engine, which refuses a size past it typed; the ranges and
the memory planned are in the manifest and `modelkit inspect`. Refused before: the edge kept only the batch open.
Models a newcomer brings: a reader of token ids with their own sinusoidal positions, an any-size image
network with a strided `same` convolution on TensorFlow."""
import importlib.util
import json

import numpy as np
import pytest
from click.testing import CliRunner

import modelkit
from modelkit.cli import main
from modelkit.errors import ShapeError
from modelkit.formats import manifest_path

needs_executorch = pytest.mark.skipif(importlib.util.find_spec("executorch") is None,
                                      reason="executorch is not installed (pip install 'modelkit[executorch]')")

SINUSOIDS = '''import keras
from keras import ops


@keras.saving.register_keras_serializable(package="reader")
class Sinusoids(keras.layers.Layer):
    """Fixed sinusoidal positions added to token embeddings, for any length."""

    def call(self, x):
        half = ops.shape(x)[-1] // 2
        steps = ops.cast(ops.arange(ops.shape(x)[1]), "float32")[:, None]
        rates = ops.exp(-ops.cast(ops.arange(half), "float32") * 0.5)[None, :]
        angles = steps * rates
        return x + ops.concatenate([ops.sin(angles), ops.cos(angles)], axis=-1)[None]
'''


@pytest.fixture(scope="module")
def reader(tmp_path_factory):
    """Token ids of any length -> 3 classes: the user's sinusoidal positions, causal self-attention, a `same`
    Conv1D over time and a max over it; saved on TensorFlow; converted to executorch (default bounds)."""
    from tests.helpers.user_code import keras_beside

    folder = tmp_path_factory.mktemp("reader")
    user, keras = keras_beside(folder, "sinusoids", SINUSOIDS)
    L = keras.layers
    ids = keras.Input((None,), dtype="int32", name="ids")
    h = user.Sinusoids()(L.Embedding(40, 16)(ids))
    h = L.LayerNormalization()(L.Add()([h, L.MultiHeadAttention(2, 8)(h, h, use_causal_mask=True)]))
    h = L.GlobalMaxPooling1D()(L.Conv1D(12, 5, padding="same", activation="relu")(h))
    keras.Model(ids, L.Dense(3, activation="softmax", name="probs")(h)).save(folder / "reader.keras")
    return folder


def _pte(folder, out, **options):
    (r,) = modelkit.convert(folder / "reader.keras", "executorch", out_dir=folder / out,
                            imports=[str(folder / "sinusoids.py")], **options)
    return r


def _ids(batch, length, seed=0):
    return np.random.default_rng(seed).integers(1, 40, size=(batch, length)).astype(np.int32)


@pytest.mark.slow
@needs_executorch
def test_an_open_sequence_length_stays_open_up_to_max_length(reader):
    r = _pte(reader, "default")
    assert r.parity["ok"]
    m = json.loads(manifest_path(r.path).read_text())
    dims = m["extra"]["dynamic_dims"]["ids"]
    assert dims["1"]["accepts"] == [1, 128] and dims["0"]["accepts"] == [1, 64]
    assert m["extra"]["planned_memory_bytes"] > 0
    pte, source = modelkit.load(r.path), modelkit.load(reader / "reader.keras")
    assert pte.signature.inputs[0].shape == (None, None)  # open for every caller, within the planned range
    for batch, length in ((1, 1), (2, 128), (70, 37)):  # 70 rows: past max_batch, in slices
        x = _ids(batch, length, seed=length)
        assert np.abs(pte.predict(x)["probs"] - source.predict(x)["probs"]).max() <= 1e-4
    with pytest.raises(ShapeError, match=r"input 'ids' dimension 1 is 129: reader\.pte takes 1\.\.128 there .*"
                                         r"--max-length N converts for more"):
        pte.predict(_ids(1, 129))


@pytest.mark.slow
@needs_executorch
def test_max_length_reaches_the_program_the_engine_and_inspect(reader):
    r = CliRunner().invoke(main, ["convert", str(reader / "reader.keras"), "--to", "executorch", "--max-length",
                                  "24", "--import", str(reader / "sinusoids.py"), "--out", str(reader / "short")])
    assert r.exit_code == 0, r.output
    pte = reader / "short" / "reader.pte"
    assert json.loads(manifest_path(pte).read_text())["extra"]["dynamic_dims"]["ids"]["1"]["accepts"] == [1, 24]
    model = modelkit.load(pte)
    assert model.predict(_ids(3, 24))["probs"].shape == (3, 3)
    with pytest.raises(ShapeError, match="dimension 1 is 25: reader.pte takes 1..24"):
        model.predict(_ids(3, 25))
    shown = CliRunner().invoke(main, ["inspect", str(pte)])
    assert shown.exit_code == 0, shown.output
    assert "input 'ids' dimension 1: 1..24 planned in the program (--max-length)" in shown.output
    planned = json.loads(manifest_path(pte).read_text())["extra"]["planned_memory_bytes"]
    assert f"memory: {planned / 2**20:.1f} MiB planned for the largest sizes, allocated at load" in shown.output


@pytest.mark.parametrize("value", ["8", "abc", "70000", "2.5"])
def test_bad_max_length_is_one_line_exit_2_before_any_work(cnn_tf, tmp_path, value):
    r = CliRunner().invoke(main, ["convert", str(cnn_tf), "--to", "executorch", "--max-length", value,
                                  "--out", str(tmp_path / "out")])
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith(f"error: max_length={value!r}: ") and "from 16 " in r.stderr and "to 65536" in r.stderr
    assert not (tmp_path / "out").exists()
    r = CliRunner().invoke(main, ["convert", str(cnn_tf), "--to", "onnx", "--max-length", "32"])
    assert r.exit_code == 2 and r.stderr.strip() == "error: --max-length applies to --to executorch only (asked: onnx)"


@pytest.mark.slow
@needs_executorch
def test_an_any_size_image_network_with_a_strided_same_convolution_converts(tmp_path):
    """Its padding over an open side is `torch.sym_max(...)`, which to_edge's verifier refused (AssertionError)
    before it was written as ExecuTorch's prim op."""
    from modelkit._backend import import_keras

    keras = import_keras("tensorflow")
    keras.utils.set_random_seed(1)
    L = keras.layers
    image = keras.Input((None, None, 3), name="image")
    h = L.DepthwiseConv2D(3, strides=2, padding="same")(L.Conv2D(8, 3, padding="same", activation="relu")(image))
    keras.Model(image, L.Dense(2, name="out")(L.GlobalAveragePooling2D()(L.Conv2D(4, 1)(h)))).save(
        tmp_path / "anysize.keras")
    (r,) = modelkit.convert(tmp_path / "anysize.keras", "executorch", out_dir=tmp_path / "out")
    assert r.parity["ok"]
    dims = json.loads(manifest_path(r.path).read_text())["extra"]["dynamic_dims"]["image"]
    assert dims["1"]["accepts"] == dims["2"]["accepts"] == [1, 128]
    pte, source = modelkit.load(r.path), modelkit.load(tmp_path / "anysize.keras")
    for shape in ((2, 17, 33, 3), (1, 128, 5, 3)):
        x = np.random.default_rng(2).random(shape, dtype=np.float32)
        assert np.abs(pte.predict(x)["out"] - source.predict(x)["out"]).max() <= 1e-4


@pytest.fixture(scope="module")
def spotter(tmp_path_factory):
    """A keyword spotter on raw waveforms of any length (nc114): two strided `same` Conv1D (x4, then x2), a
    BatchNormalization and a max over time; saved on TensorFlow."""
    from modelkit._backend import import_keras

    keras = import_keras("tensorflow")
    keras.utils.set_random_seed(5)
    L = keras.layers
    wave = keras.Input((None, 1), name="wave")
    h = L.Conv1D(8, 9, strides=4, padding="same", activation="relu")(wave)
    h = L.BatchNormalization()(L.Conv1D(16, 5, strides=2, padding="same", activation="relu")(h))
    path = tmp_path_factory.mktemp("spotter") / "kws.keras"
    keras.Model(wave, L.Dense(3, activation="softmax", name="probs")(L.GlobalMaxPooling1D()(h))).save(path)
    return path


def _waves(batch, length, seed=0):
    return np.random.default_rng(seed).normal(0, 1, (batch, length, 1)).astype(np.float32)


@pytest.mark.slow
@needs_executorch
def test_a_keyword_spotter_runs_at_every_batch_and_length_it_plans_for(spotter):
    """Its length is 1 after both convolutions at the export's example (8): lowering traced the program again from
    there, broadcasting took that 1 as fixed, and memory was planned for one step, so 7 waveforms of 80 failed
    ("resize a bounded tensor with a maximum capacity of 2048 elements", error 0x10) while every verification size
    passed. The program is now traced again at 64 before lowering."""
    (r,) = modelkit.convert(spotter, "executorch", out_dir=spotter.parent / "out")
    pte, source = modelkit.load(r.path), modelkit.load(spotter)
    for batch, length in ((7, 80), (64, 128), (1, 1), (3, 9)):
        x = _waves(batch, length, seed=length)
        assert np.abs(pte.predict(x)["probs"] - source.predict(x)["probs"]).max() <= 1e-4


@pytest.mark.slow
@needs_executorch
def test_a_program_planned_too_small_is_refused_at_conversion_naming_its_largest_sizes(spotter, tmp_path):
    """The edge runs every program once at its largest planned sizes (batch max_batch, open dims at max_length):
    the spotter lowered without the tracing again above is refused there, with the runtime's reason."""
    from modelkit import _child
    from modelkit.errors import ConversionError

    with pytest.raises(ConversionError, match=r"kws\.keras fails at the largest sizes it plans for \('wave' \(64, "
                                              r"128, 1\)\): .*Attempted to resize a bounded tensor"):
        _child.run("tests.convert.executorch_unplanned:convert_without_relowering",
                   {"src": str(spotter), "dest": str(tmp_path / "kws.pte")}, backend="torch", quiet=True)


@pytest.mark.slow  # an int8 calibration and lowering: ~25 s on the shared 2-core machine
@needs_executorch
def test_int8_over_an_open_length_runs_its_dequantize_ops_outside_xnnpack(tmp_path):
    """The quantized 1-D convolution runs outside XNNPACK with the batch and the length open, and its
    dequantize_per_channel had no out variant registered ("Missing out variants") before."""
    from modelkit._backend import import_keras

    keras = import_keras("tensorflow")
    keras.utils.set_random_seed(3)
    L = keras.layers
    ids = keras.Input((None,), dtype="int32", name="ids")
    h = L.GlobalAveragePooling1D()(L.Conv1D(16, 3, padding="same", activation="relu")(L.Embedding(40, 16)(ids)))
    keras.Model(ids, L.Dense(3, activation="softmax", name="probs")(h)).save(tmp_path / "conv.keras")
    x = _ids(200, 20, seed=4)
    np.savez(tmp_path / "eval.npz", ids=x, y=modelkit.load(tmp_path / "conv.keras").predict(x)["probs"].argmax(-1))
    (r,) = modelkit.convert(tmp_path / "conv.keras", "executorch", out_dir=tmp_path, quantize="int8",
                            calibration_data=tmp_path / "eval.npz", eval_data=tmp_path / "eval.npz",
                            max_accuracy_drop=0.1)  # labels from an untrained model's near-ties: not what is tested
    assert json.loads(manifest_path(r.path).read_text())["extra"]["dynamic_dims"]["ids"]["1"]["accepts"] == [1, 128]
    model = modelkit.load(r.path)
    for length in (3, 100):
        assert model.predict(_ids(2, length))["probs"].shape == (2, 3)


POSITIONS = '''import keras
from keras import ops


@keras.saving.register_keras_serializable(package="short")
class AddPositions(keras.layers.Layer):
    """A learned position per step, from a table of `rows` rows: the model runs up to `rows` steps."""

    def __init__(self, rows=20, **kwargs):
        super().__init__(**kwargs)
        self.rows = rows

    def build(self, shape):
        self.table = self.add_weight(shape=(self.rows, shape[-1]), name="table")

    def call(self, x):
        return x + ops.take(self.table, ops.arange(ops.shape(x)[1]), axis=0)

    def get_config(self):
        return {**super().get_config(), "rows": self.rows}
'''


@pytest.mark.slow
@needs_executorch
def test_a_table_of_positions_shorter_than_max_length_is_fitted_by_default_and_refused_when_asked(tmp_path, capfd):
    """20 rows of positions: the program was written and failed past 20 steps at run time (its verification runs
    shorter lengths). An explicit max_length of 128 is refused at conversion by the run at the largest planned sizes,
    with the runtime's reason and the --max-length that fixes it; without one, the longest length the eager model
    runs at (20) is planned for (nc133: a table of 64 needed --max-length 64)."""
    from modelkit.errors import ConversionError, ShapeError
    from tests.helpers.user_code import keras_beside

    user, keras = keras_beside(tmp_path, "positions", POSITIONS)
    ids = keras.Input((None,), dtype="int32", name="ids")
    h = keras.layers.GlobalAveragePooling1D()(user.AddPositions(rows=20)(keras.layers.Embedding(30, 8)(ids)))
    keras.Model(ids, keras.layers.Dense(2, name="out")(h)).save(tmp_path / "short.keras")
    imports = [str(tmp_path / "positions.py")]
    with pytest.raises(ConversionError, match=r"short\.keras fails at the largest sizes it plans for \('ids' \(64, "
                                              r"128\)\): .*20 >= weight\.size\(0\) 20.*converts with a smaller "
                                              r"--max-length N"):
        modelkit.convert(tmp_path / "short.keras", "executorch", out_dir=tmp_path / "long", imports=imports,
                         max_length=128)
    assert not list(tmp_path.glob("long/**/*.pte"))  # nothing written, not even in a partial folder
    capfd.readouterr()
    (r,) = modelkit.convert(tmp_path / "short.keras", "executorch", out_dir=tmp_path / "out", imports=imports)
    assert "short.keras fails past 20 along its open dimensions" in capfd.readouterr().err
    x = _ids(3, 20) % 30
    pte, source = modelkit.load(r.path), modelkit.load(tmp_path / "short.keras")
    assert np.abs(pte.predict(x)["out"] - source.predict(x)["out"]).max() <= 1e-4
    with pytest.raises(ShapeError):
        pte.predict(_ids(3, 21) % 30)


@pytest.mark.slow  # an int8 calibration and two lowerings: ~35 s on the shared 2-core machine
@needs_executorch
def test_int8_of_a_strided_same_convolution_over_an_open_length(spotter, tmp_path):
    """The quantized module is exported again over the float program's ranges: its strided `same` padding,
    `max(0, ...)` of the length, made guards torch could not prove from named Dims ("Constraints violated (wave_1)")
    before the export tried Dim.AUTO, size-oblivious, as the first export does."""
    x = _waves(120, 60, seed=6)
    np.savez(tmp_path / "eval.npz", wave=x, y=modelkit.load(spotter).predict(x)["probs"].argmax(-1))
    (r,) = modelkit.convert(spotter, "executorch", out_dir=tmp_path, quantize="int8", max_length=64,
                            calibration_data=tmp_path / "eval.npz", eval_data=tmp_path / "eval.npz",
                            max_accuracy_drop=0.1)  # labels from an untrained model's near-ties: not what is tested
    model = modelkit.load(r.path)
    for batch, length in ((64, 64), (7, 33), (1, 1)):
        assert model.predict(_waves(batch, length))["probs"].shape == (batch, 3)


def test_verification_sizes_stay_within_a_program_s_planned_range():
    """A model that runs only at multiples of a stride is verified at 32, 96 and 160 (rotated across its sides):
    within a program planned up to 128, only one case ran, and parity refused "checked at only 1 size(s)"."""
    from modelkit.converters._shapes import axis_bounds, is_tied, size_plans
    from modelkit.spec import Signature, TensorSpec

    sig = Signature(inputs=(TensorSpec("image", (None, None, None, 3)),), outputs=(TensorSpec("y", (None, 2)),))
    bounds = axis_bounds({("image", 1): (4, 128), ("image", 2): (4, 128)})
    plans = size_plans(sig, sig, bounds)
    aligned = [p for p in plans if p[1] % 32 == 0 and p[2] % 32 == 0 and not is_tied(p)]
    assert aligned == [{1: 32, 2: 96}, {1: 96, 2: 32}]
    # the tied cases (every side at one size) come after every rotation, within the bounds too
    tied = [p[1] for p in plans if is_tied(p)]
    assert tied == [13, 64, 29, 100, 32, 96, 5, 8] and plans[-len(tied):] == [p for p in plans if is_tied(p)]
    assert {1: 96, 2: 160} in size_plans(sig, sig)  # unbounded: as before
    assert axis_bounds({("a", 1): (1, 64), ("b", 1): (3, 128)}) == {1: (3, 64)}
    # a program that takes sides from 64 (an any-size EfficientNetB0's, nc115): no case had both sides in range
    narrow = size_plans(sig, sig, axis_bounds({("image", 1): (64, 128), ("image", 2): (64, 128)}))
    assert narrow == [{1: 64, 2: 64}, {1: 100, 2: 100}, {1: 96, 2: 96}]


@pytest.mark.slow
def test_nested_export_contexts_leave_opt_einsum_as_they_found_it():
    """A refusal names the layer by exporting again inside the first export's context; the inner context's exit
    raised "ValueError: opt_einsum is not enabled ..." over the real error."""
    import subprocess
    import sys

    code = ("from modelkit.converters._torch_dims import symbolic_sizes\n"
            "import torch\n"
            "with symbolic_sizes():\n"
            "    with symbolic_sizes():\n"
            "        pass\n"
            "    assert not torch.backends.opt_einsum.enabled\n"
            "assert torch.backends.opt_einsum.enabled\n"
            "print('ok')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "KERAS_BACKEND": "torch"})
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


@pytest.mark.slow
@needs_executorch
def test_a_model_traced_past_max_length_is_refused_naming_the_length_it_needs(tmp_path):
    """A U-Net takes only multiples of 4, so it is traced at 64 and 96: below that, one typed line naming the
    --max-length it needs (it was 'does not run at batch 1 ... the batch size was baked into the graph')."""
    from modelkit._backend import import_keras
    from modelkit.errors import UnsupportedConversionError

    keras = import_keras("tensorflow")
    L = keras.layers
    image = keras.Input((None, None, 3), name="image")
    a = L.Conv2D(4, 3, padding="same", activation="relu")(image)
    b = L.Conv2D(4, 3, padding="same", activation="relu")(L.MaxPooling2D()(a))
    c = L.Conv2D(4, 3, padding="same")(L.MaxPooling2D()(b))
    u = L.Concatenate()([L.UpSampling2D()(L.Concatenate()([L.UpSampling2D()(c), b])), a])
    keras.Model(image, L.Conv2D(1, 1, name="mask")(u)).save(tmp_path / "unet.keras")
    with pytest.raises(UnsupportedConversionError, match=r"unet\.keras does not run at the small sizes an export is "
                                                         r"traced at .* and is traced at 96, past max_length=32: "
                                                         r"convert with --max-length 96 or more"):
        modelkit.convert(tmp_path / "unet.keras", "executorch", out_dir=tmp_path / "short", max_length=32)
    (r,) = modelkit.convert(tmp_path / "unet.keras", "executorch", out_dir=tmp_path / "out")
    dims = json.loads(manifest_path(r.path).read_text())["extra"]["dynamic_dims"]["image"]
    # multiples of 4 within the plan: 32 x 96 and 96 x 32 (sides apart), then a square of 64 (the tied cases)
    assert dims["1"]["accepts"] == [4, 128] and dims["1"]["sizes"] == dims["2"]["sizes"] == [32, 64, 96]
