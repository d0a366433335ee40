"""TF Serving package: NAME/VERSION/ SavedModel, warm-up requests, and models.config.

    OUT/models.config                                     model_config_list, base_path /models/NAME
    OUT/NAME/VERSION/saved_model.pb, variables/
    OUT/NAME/VERSION/assets.extra/tf_serving_warmup_requests   TFRecord of PredictionLog protos

tensorflow-serving-api is not a dependency (its wheel requires the full `tensorflow` package, which
would install next to tensorflow-cpu), so the PredictionLog records are encoded here by hand on the
protobuf wire format (field numbers from tensorflow_serving/apis/{prediction_log,predict,model}.proto),
with the TensorProto payloads made by TensorFlow itself. The tests parse them back with the real
message definitions.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from ...formats import Format
from ...spec import Signature
from ..errors import PackagingError
from . import ir_elsewhere

SIGNATURE_NAME = "serving_default"
WARMUP_FILE = "tf_serving_warmup_requests"


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2): strings, bytes, sub-messages and map entries."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def prediction_log(model_name: str, inputs: dict[str, bytes], signature_name: str = SIGNATURE_NAME) -> bytes:
    """PredictionLog{predict_log: PredictLog{request: PredictRequest{model_spec, inputs}}} serialized.

    inputs: input name -> serialized tensorflow.TensorProto.
    """
    # ModelSpec: name = 1, signature_name = 3
    model_spec = _field(1, model_name.encode()) + _field(3, signature_name.encode())
    request = _field(1, model_spec)  # PredictRequest.model_spec = 1
    for key, tensor in inputs.items():  # PredictRequest: map<string, TensorProto> inputs = 2 (entry: key=1, value=2)
        request += _field(2, _field(1, key.encode()) + _field(2, tensor))
    predict_log = _field(1, request)  # PredictLog.request = 1
    return _field(6, predict_log)  # PredictionLog.predict_log = 6


def warmup_records(model_name: str, sig: Signature, batch_sizes: tuple[int, ...] = (1,),
                   artifact: Path | None = None) -> list[bytes]:
    import tensorflow as tf

    from ...spec import tf_input_names
    from ..warmup import feeds

    keys = tf_input_names(sig.input_names)  # the signature's own keys ('user-id' is 'user_id' there)
    records = []
    for n in batch_sizes:  # the inputs modelkit's own server tries first (the sizes its manifest verified)
        feed = next(feeds(artifact, sig, n)) if artifact is not None else sig.warmup_inputs(n)
        tensors = {keys[name]: tf.make_tensor_proto(x).SerializeToString() for name, x in feed.items()}
        records.append(prediction_log(model_name, tensors))
    return records


def models_config(names: list[str], base: str = "/models") -> str:
    entries = "".join(f'  config {{\n    name: "{n}"\n    base_path: "{base}/{n}"\n'
                      f'    model_platform: "tensorflow"\n  }}\n' for n in names)
    return f"model_config_list {{\n{entries}}}\n"


def build(artifact: Path, fmt: Format, tmp: Path, *, dest: Path, name: str, version: int,
          base_path: str = "/models", **_: Any) -> None:
    if fmt != Format.SAVED_MODEL:
        raise PackagingError(f"TF Serving serves SavedModels; {artifact} is {fmt.value} "
                             f"({ir_elsewhere(fmt)}modelkit convert MODEL.keras --to saved_model)")
    import tensorflow as tf

    from ...runtime import load

    sig = load(artifact).signature  # the model's inputs; warmup_records keys them as serving_default does
    vdir = tmp / name / str(version)
    shutil.copytree(artifact, vdir, ignore=shutil.ignore_patterns("*.modelkit.json"))
    extra = vdir / "assets.extra"
    extra.mkdir(exist_ok=True)
    batch = (1, 8) if all(s.shape and s.shape[0] is None for s in sig.inputs) else (1,)
    with tf.io.TFRecordWriter(str(extra / WARMUP_FILE)) as writer:
        for rec in warmup_records(name, sig, batch, artifact=artifact):
            writer.write(rec)
    (tmp / "models.config").write_text(models_config([name], base_path.rstrip("/")))
