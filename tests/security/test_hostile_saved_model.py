"""SavedModel graphs that do I/O (issue 16, item 3): saved_model.pb is scanned (main graph and every
function of its library) before TensorFlow loads it. A resource initializer that calls tf.io.write_file
writes during tf.saved_model.load; a serving function that does writes on every predict. Both are
refused, naming the op and the function; the trust flag lifts it; asset paths are checked always."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import modelkit
from modelkit.errors import UnsafeModelError

from ._build import build_saved_model
from ._hostile import in_child, serving_writer

tf = pytest.importorskip("tensorflow")


def _initializer_writer(folder: Path, canary: Path) -> Path:
    """A lookup table whose initializer (run by tf.saved_model.load itself) writes the canary."""
    class WritingInit(tf.lookup.KeyValueTensorInitializer):
        def initialize(self, table):
            with tf.control_dependencies([tf.io.write_file(str(canary), "ran")]):
                return super().initialize(table)

    class Table(tf.Module):
        def __init__(self):
            super().__init__()
            self.table = tf.lookup.StaticHashTable(WritingInit(tf.constant(["a"]), tf.constant([1], tf.int64)), -1)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="s")])
        def serve(self, s):
            return {"ids": self.table.lookup(s)}

    m = Table()
    tf.saved_model.save(m, str(folder), signatures={"serving_default": m.serve})
    return folder


def _vocab_table(folder: Path, vocab: Path) -> Path:
    """The legitimate file read: a TextFileInitializer over an asset copied into the SavedModel."""
    class Table(tf.Module):
        def __init__(self):
            super().__init__()
            init = tf.lookup.TextFileInitializer(str(vocab), tf.int64, tf.lookup.TextFileIndex.WHOLE_LINE,
                                                 tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER)
            self.table = tf.lookup.StaticHashTable(init, -1)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="s")])
        def serve(self, s):
            return {"ids": self.table.lookup(s)}

    m = Table()
    tf.saved_model.save(m, str(folder), signatures={"serving_default": m.serve})
    return folder


def test_serving_function_that_writes_is_refused(tmp_path):
    canary = tmp_path / "canary"
    path = serving_writer(tmp_path / "writer_saved_model", canary)
    canary.unlink(missing_ok=True)  # tracing ran it once; only loading and predicting matter
    refused = (r"writer_saved_model: refused to load: function '__inference_serve_\d+' holds the TensorFlow op "
               r"'WriteFile' \(node '.*'\), which reads or writes files.*--trust-unsafe-code")
    with pytest.raises(UnsafeModelError, match=refused):
        modelkit.load(path)
    assert not canary.exists()
    m = modelkit.load(path, trust_unsafe_code=True)  # the user's own model: the flag lifts it
    m.predict(np.ones((1, 4), np.float32))
    assert canary.exists()


@pytest.mark.slow
def test_resource_initializer_that_writes_is_refused_before_loading(tmp_path):
    canary = tmp_path / "canary"
    path = _initializer_writer(tmp_path / "init_saved_model", canary)
    canary.unlink(missing_ok=True)
    proc = in_child(f"import tensorflow as tf\ntf.saved_model.load({str(path)!r})")  # plain TF: loading writes
    assert proc.returncode == 0 and canary.exists(), proc.stderr[-800:]
    canary.unlink()
    with pytest.raises(UnsafeModelError, match=r"function '__inference__initializer_\d+' holds the TensorFlow op "
                                               r"'WriteFile'"):
        modelkit.load(path)
    from modelkit.cli.inspect import describe

    with pytest.raises(UnsafeModelError, match="WriteFile"):
        describe(str(path))
    assert not canary.exists()


def test_checkpoint_function_called_from_serving_is_refused(tmp_path):
    """SaveV2 is allowed in the saver_def's own functions only: calling them from serving writes files."""
    from tensorflow.core.protobuf import saved_model_pb2

    path = build_saved_model(tmp_path / "tiny_saved_model")
    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString((path / "saved_model.pb").read_bytes())
    lib = sm.meta_graphs[0].graph_def.library
    save_fn = next(f.signature.name for f in lib.function if "_traced_save_" in f.signature.name)
    serve = next(f for f in lib.function if re.match(r"__inference_serve_\d+$", f.signature.name))
    node = serve.node_def.add(name="evil_save", op="StatefulPartitionedCall")
    node.attr["f"].func.name = save_fn
    (path / "saved_model.pb").write_bytes(sm.SerializeToString())
    with pytest.raises(UnsafeModelError, match=f"function '{serve.signature.name}' calls the checkpoint function "
                                               f"'{save_fn}'"):
        modelkit.load(path)


def test_asset_outside_the_folder_is_refused_even_when_trusted(tmp_path):
    from tensorflow.core.protobuf import saved_model_pb2

    vocab = tmp_path / "vocab.txt"
    vocab.write_text("7\n11\n13\n")
    path = _vocab_table(tmp_path / "vocab_saved_model", vocab)
    assert modelkit.load(path).predict({"s": np.array([11, 5])})["ids"].tolist() == [1, -1]
    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString((path / "saved_model.pb").read_bytes())
    sm.meta_graphs[0].asset_file_def[0].filename = "../../../etc/passwd"
    (path / "saved_model.pb").write_bytes(sm.SerializeToString())
    with pytest.raises(UnsafeModelError, match=r"asset .*: location '\.\./\.\./\.\./etc/passwd' contains '\.\.'"):
        modelkit.load(path, trust_unsafe_code=True)


def test_keras_export_and_tf_module_saved_models_still_load(tmp_path):
    import keras

    from ._build import build_keras, expected

    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    plain = build_saved_model(tmp_path / "tiny_saved_model")
    np.testing.assert_allclose(modelkit.load(plain).predict({"x": x})["probs"], expected(x), atol=1e-5)
    exported = tmp_path / "export_saved_model"
    keras.saving.load_model(build_keras(tmp_path / "tiny.keras")).export(str(exported))
    out = modelkit.load(exported).predict(x)
    np.testing.assert_allclose(next(iter(out.values())), expected(x), atol=1e-5)


def test_every_registered_io_op_is_refused_or_reviewed():
    """Each op TensorFlow registers whose name suggests I/O is refused by family, checked where it is
    used, or reviewed here as computing in memory only (a new TensorFlow release fails this test)."""
    from tensorflow.core.framework import op_def_pb2
    from tensorflow.python.client import pywrap_tf_session as c_api

    from modelkit.safety.graph import CHECKPOINT_OPS, denied_family

    ops = op_def_pb2.OpList()
    ops.ParseFromString(c_api.TF_GetBuffer(c_api.TF_GetAllOpList()))
    checked_by_use = {"PrintV2", "DecodeProtoV2", "EncodeProto", *CHECKPOINT_OPS}
    reviewed = re.compile(  # in-memory only: variables, tensor arrays, summaries as protos, TPU-only ops
        r"^(ReadVariableOp|_ReadVariablesOp|ReadVariableXlaSplitND|RngReadAndSkip|TensorArray(Read|Write)V?\d?|"
        r".*Summar(y|ies)(V2)?|Print|Fingerprint|SdcaFprint|Snapshot|ShardedFile(name|spec)|DisableCopyOnRead|"
        r"BarrierReadySize|PreventGradient|BoostedTreesExampleDebugOutputs|.*ThreadPoolHandle|"
        r"ThreadUnsafeUnigramCandidateSampler|.*TPU.*|Tpu.*|XlaSparseCore.*)$")
    suspicious = re.compile(r"File|Writ|Read|Save|Restor|Load|Print|Debug|Rpc|Summar|PyFunc|Checkpoint|Socket|"
                            r"Proto|Immutable|Vocab|Remap|Event|Sql|LMDB|Record|Snapshot|Cache|Service|Send|Recv|"
                            r"Collective|Dataset|Iterator|Distributed", re.I)
    unreviewed = [o.name for o in ops.op if suspicious.search(o.name) and not denied_family(o.name)
                  and o.name not in checked_by_use and not reviewed.match(o.name)]
    assert unreviewed == []
    for op in ("WriteFile", "ReadFile", "PyFunc", "EagerPyFunc", "MatchingFiles", "WholeFileReaderV2",
               "TFRecordDataset", "DebugIdentityV2", "CreateSummaryFileWriter", "RpcCall", "ImmutableConst",
               "SaveDataset", "CollectiveReduceV2", "InitializeTableFromTextFileV2"):
        assert denied_family(op), op
