"""Hostile Keras files are refused before Keras runs anything, with a typed error naming the reason; a
canary (a file the payload would create, a loopback port it would connect to) proves nothing ran."""
from __future__ import annotations

import json
import socket
import zipfile
from pathlib import Path

import numpy as np
import pytest

import modelkit
from modelkit.errors import LoadError, UnsafeModelError
from modelkit.formats import Format, detect

from ._build import build_keras, expected
from ._hostile import serving_writer, with_dense_activation


def _touching_lambda(canary: Path):
    import keras

    # the code Keras would unmarshal and run when it rebuilds the graph: it creates the canary
    fn = eval(f"lambda t: (__import__('pathlib').Path({str(canary)!r}).touch(), t)[1]")  # noqa: S307
    return keras.layers.Lambda(fn, name="payload")


def _lambda_model(canary: Path):
    import keras

    x = keras.Input((4,), name="x")
    return keras.Model(x, keras.layers.Dense(3, name="probs")(_touching_lambda(canary)(x)))


@pytest.fixture
def canary(tmp_path) -> Path:
    c = tmp_path / "canary"
    yield c


def test_lambda_keras_is_refused_and_trust_flag_lifts_it(tmp_path, canary):
    path = tmp_path / "lambda.keras"
    _lambda_model(canary).save(path)
    canary.unlink(missing_ok=True)  # saving traced the lambda once; only loading matters
    with pytest.raises(UnsafeModelError, match=r"config\..*'Lambda' that carries Python code.*--trust-unsafe-code"):
        modelkit.load(path)
    assert not canary.exists()
    from modelkit.cli.inspect import describe

    with pytest.raises(UnsafeModelError, match="Lambda"):
        describe(str(path))
    assert not canary.exists()
    m = modelkit.load(path, trust_unsafe_code=True)  # the user's own file: the flag lifts safe mode
    assert canary.exists() and m.predict(np.ones((1, 4), np.float32))["probs"].shape == (1, 3)


def test_legacy_h5_is_detected_and_its_lambda_refused(tmp_path, canary):
    good = tmp_path / "good.h5"
    import keras

    build_keras(tmp_path / "t.keras")
    keras.saving.load_model(tmp_path / "t.keras").save(good)
    assert good.read_bytes()[:8] == b"\x89HDF\r\n\x1a\n" and detect(good) == Format.KERAS
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    np.testing.assert_allclose(modelkit.load(good).predict({"x": x})["probs"], expected(x), atol=1e-5)
    bad = tmp_path / "lambda.h5"
    _lambda_model(canary).save(bad)
    canary.unlink(missing_ok=True)
    with pytest.raises(UnsafeModelError, match="'Lambda' that carries Python code"):
        modelkit.load(bad)
    assert not canary.exists()


def _fn(module, name, registered=None):
    return {"module": module, "class_name": "function", "config": name, "registered_name": registered}


@pytest.fixture(scope="module")
def tiny_keras(tmp_path_factory) -> Path:
    return build_keras(tmp_path_factory.mktemp("hostile_keras") / "tiny.keras")


@pytest.mark.parametrize("payload, named", [
    (_fn("os", "system", "system"), "os.system"),
    (_fn("posix", "system"), "posix.system"),
    ({"module": "subprocess", "class_name": "Popen", "config": {"args": ["touch", "CANARY"]},
      "registered_name": None}, "subprocess.Popen"),
    (_fn("builtins", "eval"), "Python builtin 'eval'"),
    (_fn("builtins", "__import__"), "Python builtin '__import__'"),
    (_fn("importlib", "import_module"), "importlib.import_module"),
    (_fn("keras.utils", "get_file"), "keras.utils.get_file"),
    (_fn("keras.config", "enable_unsafe_deserialization"), "keras.config.enable_unsafe_deserialization"),
    (_fn("keras.src.saving.serialization_lib", "enable_unsafe_deserialization"),
     "keras.src.saving.serialization_lib.enable_unsafe_deserialization"),
    ({"module": "evil_pkg.layers", "class_name": "Evil", "config": {}, "registered_name": "Custom>Evil"},
     "evil_pkg.layers.Evil"),
])
def test_config_naming_an_arbitrary_callable_is_refused(tiny_keras, tmp_path, payload, named):
    canary = tmp_path / "canary"
    payload = json.loads(json.dumps(payload).replace("CANARY", str(canary)))
    path = with_dense_activation(tiny_keras, tmp_path / "evil.keras", payload)
    with pytest.raises(UnsafeModelError, match="refused to load") as info:
        modelkit.load(path, trust_unsafe_code=True)  # the trust flag does not lift these
    assert named in str(info.value)
    assert not canary.exists()


def test_get_file_payload_makes_no_connection(tiny_keras, tmp_path):
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        srv.settimeout(0.5)
        port = srv.getsockname()[1]
        payload = {"module": "keras.utils", "class_name": "get_file",
                   "config": {"fname": "x", "origin": f"http://127.0.0.1:{port}/payload"}, "registered_name": None}
        path = with_dense_activation(tiny_keras, tmp_path / "fetch.keras", payload)
        with pytest.raises(UnsafeModelError, match=r"keras\.utils\.get_file.*not a model part"):
            modelkit.load(path)
        with pytest.raises(socket.timeout):
            srv.accept()  # nobody connected


def test_registered_custom_layer_still_loads(tmp_path):
    import keras

    @keras.saving.register_keras_serializable(package="security_test")
    class Doubler(keras.layers.Layer):
        def call(self, x):
            return x * 2.0

    x = keras.Input((4,), name="x")
    keras.Model(x, Doubler(name="twice")(x)).save(tmp_path / "custom.keras")
    m = modelkit.load(tmp_path / "custom.keras")
    np.testing.assert_allclose(m.predict(np.ones((1, 4), np.float32))["twice"], 2.0)


def test_tfsm_layer_loading_an_outside_saved_model_is_refused(tmp_path, canary):
    import keras

    outside = serving_writer(tmp_path / "elsewhere" / "sm", canary)
    canary.unlink(missing_ok=True)
    x = keras.Input((4,), name="x")
    layer = keras.layers.TFSMLayer(str(outside), call_endpoint="serving_default")
    model_dir = tmp_path / "models"
    model_dir.mkdir()
    keras.Model(x, layer(x)).save(model_dir / "tfsm.keras")
    canary.unlink(missing_ok=True)
    with pytest.raises(UnsafeModelError, match="TFSMLayer that loads another SavedModel"):
        modelkit.load(model_dir / "tfsm.keras")
    with pytest.raises(UnsafeModelError, match=r"TFSMLayer filepath: location '\.\./elsewhere/sm' contains '\.\.'"):
        modelkit.load(model_dir / "tfsm.keras", trust_unsafe_code=True)  # nothing lifts the path checks
    assert not canary.exists()


def test_keras_zip_with_escaping_member_is_refused(tiny_keras, tmp_path):
    path = tmp_path / "escape.keras"
    with zipfile.ZipFile(tiny_keras) as zin, zipfile.ZipFile(path, "w") as zout:
        for item in zin.infolist():
            zout.writestr(item, zin.read(item.filename))
        zout.writestr("../../outside.txt", b"x")
    with pytest.raises(UnsafeModelError, match=r"member '\.\./\.\./outside\.txt' contains '\.\.'"):
        modelkit.load(path)
    link = tmp_path / "link.keras"
    with zipfile.ZipFile(tiny_keras) as zin, zipfile.ZipFile(link, "w") as zout:
        for item in zin.infolist():
            zout.writestr(item, zin.read(item.filename))
        info = zipfile.ZipInfo("assets/evil")
        info.external_attr = (0o120777 << 16)
        zout.writestr(info, "/etc/passwd")
    with pytest.raises(UnsafeModelError, match="'assets/evil' is a symbolic link"):
        modelkit.load(link)
    with pytest.raises(LoadError, match="not a readable .keras archive"):
        (tmp_path / "noconf.keras").write_bytes(b"PK\x05\x06" + b"\0" * 18)
        from modelkit.keras_io.files import check_keras_archive

        check_keras_archive(tmp_path / "noconf.keras")
