"""keras -> onnx on the trained digits CNN from two backends, the JAX-trained two-input model,
and the failure paths (parity failure kept under its own name, vacuous checks, existing outputs)."""
import json

import numpy as np
import pytest

import modelkit
from modelkit.errors import ArtifactExistsError, ParityError, VacuousParityError


@pytest.mark.parametrize("backend", ["tensorflow", "torch"])
def test_parity_of_trained_cnn_from_each_backend(converted, backend):
    path = converted[backend]["onnx"]
    m = json.loads(path.with_name(path.name + ".modelkit.json").read_text())
    parity = m["parity"]
    assert parity["ok"] and parity["inputs"] == "digits test split (real samples)"
    assert [c["batch"] for c in parity["cases"]] == [1, 7]
    (probs,) = parity["outputs"]
    assert probs["name"] == "probs" and probs["max_abs"] <= 1e-4 and probs["argmax_agreement"] == 1.0
    assert probs["spread"] > 0.01  # the reference really varies: the check is not vacuous
    assert m["training"]["backend"] == backend and m["training"]["test_accuracy"] >= 0.9
    assert m["opset"] == 17 and m["chain"][0]["converter"] == "modelkit.converters.keras_onnx:keras_to_onnx"
    assert m["chain"][0]["versions"]["tf2onnx"] == "1.17.0"


def test_onnx_keeps_names_and_dynamic_batch(converted, cnn_torch):
    from modelkit.core.data import test_split

    m = modelkit.load(converted["torch"]["onnx"])
    assert m.signature.input_names == ["image"] and m.signature.output_names == ["probs"]
    assert m.signature.inputs[0].shape == (None, 8, 8, 1)
    inputs, labels = test_split("digits", "cnn")
    keras_model = modelkit.load(cnn_torch)
    for batch in (1, 3, 32, 200):
        feed = {"image": inputs["image"][:batch]}
        np.testing.assert_allclose(m.predict(feed)["probs"], keras_model.predict(feed)["probs"], atol=1e-4)
    acc = float((m.predict(inputs)["probs"].argmax(-1) == labels).mean())
    assert acc >= 0.9


def test_two_inputs_two_outputs_trained_under_jax(multi_io_jax, tmp_path):
    (r,) = modelkit.convert(multi_io_jax, "onnx", out_dir=tmp_path)
    assert r.parity["ok"] and {o["name"] for o in r.parity["outputs"]} == {"probs", "intensity"}
    m = modelkit.load(r.path)
    assert sorted(m.signature.input_names) == ["features", "image"]
    assert m.signature.output_names == ["probs", "intensity"]


def test_parity_failure_keeps_the_artifact_under_a_name_that_says_so(cnn_tf, tmp_path):
    with pytest.raises(ParityError, match=r"output 'probs': max abs error .* > atol 1e-30") as info:
        modelkit.convert(cnn_tf, "onnx", out_dir=tmp_path, atol=1e-30)
    assert not (tmp_path / "cnn_tf.onnx").exists()
    assert (tmp_path / "cnn_tf.parity-failed.onnx").is_file()
    kept = json.loads((tmp_path / "cnn_tf.parity-failed.onnx.modelkit.json").read_text())
    assert kept["parity"]["ok"] is False and info.value.report["ok"] is False
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


@pytest.mark.slow  # vacuity in CI: tests/convert/test_verification_inputs.py
def test_untrained_constant_model_is_a_vacuous_check(tmp_path):
    from modelkit._backend import import_keras

    keras = import_keras("tensorflow")
    x = keras.Input((8, 8, 1), name="image")
    y = keras.layers.Dense(10, activation="softmax", kernel_initializer="zeros", name="probs")(
        keras.layers.Flatten()(x))
    src = tmp_path / "dead.keras"
    keras.Model(x, y).save(src)
    with pytest.raises(VacuousParityError, match="constant across .* different inputs"):
        modelkit.convert(src, "onnx", out_dir=tmp_path)
    assert not (tmp_path / "dead.onnx").exists()


def test_existing_output_refused_before_any_work(converted):
    path = converted["tensorflow"]["onnx"]
    before = path.stat().st_mtime_ns
    src = path.parent.parent / "cnn_tf.keras"
    with pytest.raises(ArtifactExistsError, match="--force"):
        modelkit.convert(src, "onnx", out_dir=path.parent)
    assert path.stat().st_mtime_ns == before


def test_dynamic_sequence_length_is_verified_at_several_sizes(tmp_path):
    from modelkit._backend import import_keras

    keras = import_keras("tensorflow")
    keras.utils.set_random_seed(0)
    x = keras.Input((None, 4), name="seq")
    h = keras.layers.Dense(8, activation="tanh")(x)
    y = keras.layers.Dense(3, activation="softmax", name="probs")(keras.layers.GlobalAveragePooling1D()(h))
    src = tmp_path / "seq.keras"
    keras.Model(x, y).save(src)
    (r,) = modelkit.convert(src, "onnx", out_dir=tmp_path)
    shapes = [c["shapes"]["seq"] for c in r.parity["cases"]]
    assert shapes == [[1, 1, 4], [7, 1, 4], [1, 13, 4], [7, 13, 4], [1, 64, 4], [7, 64, 4]]
    assert modelkit.load(r.path).signature.inputs[0].shape == (None, None, 4)


@pytest.mark.slow
def test_onnxslim_option_keeps_names_and_is_recorded(multi_io_jax, tmp_path):
    (r,) = modelkit.convert(multi_io_jax, "onnx", out_dir=tmp_path, options={"onnxslim": True})
    m = json.loads((tmp_path / "multi_io_jax.onnx.modelkit.json").read_text())
    assert r.parity["ok"] and r.max_abs <= 1e-4
    assert m["chain"][-1]["options"]["onnxslim"] is True and m["chain"][-1]["versions"]["onnxslim"] == "0.1.98"
    model = modelkit.load(r.path)
    assert model.signature.output_names == ["probs", "intensity"] and model.signature.inputs[0].shape[0] is None


def test_an_invalid_graph_from_the_exporter_is_a_route_failure_so_the_next_route_runs(tmp_path):
    """tf2onnx leaves TF ops it cannot map in the graph (ConvNeXtTiny at 32x32: StatefulPartitionedCall);
    onnx's checker error becomes a typed ConversionError, which hands over to the torch route."""
    from onnx import TensorProto, helper

    from modelkit.converters.keras_onnx import save_onnx
    from modelkit.converters.routes import ROUTE_FAILURES
    from modelkit.errors import ConversionError

    graph = helper.make_graph([helper.make_node("StatefulPartitionedCall", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    dest = tmp_path / "m.onnx"
    with pytest.raises(ConversionError, match=r"the exporter wrote an invalid ONNX graph for m.keras: No Op "
                                              r"registered for StatefulPartitionedCall") as info:
        save_onnx(proto, tmp_path / "m.keras", dest, None, False, "none", None)
    assert isinstance(info.value, ROUTE_FAILURES) and not dest.exists()


def test_the_producer_is_modelkit_at_its_own_version(tmp_path):
    import onnx

    from modelkit.converters.keras_onnx import save_onnx
    from tests.helpers import make_tiny_onnx

    proto = onnx.load(str(make_tiny_onnx(tmp_path / "tiny.onnx")))
    proto.producer_name, proto.producer_version = "tf2onnx", "1.17.0 None"  # what tf2onnx writes
    save_onnx(proto, tmp_path / "src.keras", tmp_path / "out.onnx", None, False, "none", None)
    saved = onnx.load(str(tmp_path / "out.onnx"))
    assert (saved.producer_name, saved.producer_version) == ("modelkit", modelkit.__version__)
