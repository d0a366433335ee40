"""A static scan of a SavedModel's graphs (saved_model.pb) before TensorFlow loads it.

A SavedModel is a program: TensorFlow runs resource initializers while loading it and the serving
function on every predict, and either can hold any registered op, including ops that write or read
files (WriteFile, ReadFile, Save, MatchingFiles, readers, summary writers, tf.data file datasets),
run Python (PyFunc, EagerPyFunc) or reach the network (RPC, collectives, send / recv). Every node of
the main graph and of every function in its library (resource initializers, serving functions and
whatever they call) is checked before TensorFlow sees the file.

Why a denylist of op *families* rather than an allowlist: models legitimately use hundreds of the
~1,900 registered ops (every Keras layer and export adds its own), so an allowlist would refuse real
exports with every new layer or TensorFlow release, while the ops that touch the outside world are few
and recognisable by name. The patterns below match families (e.g. every op whose name holds `File`,
`Reader`, `Dataset`, `Rpc`), so new ops of a family are refused too; a test checks every op TensorFlow
registers against them.

Exceptions, each for a standard path and checked precisely:
- Save / Restore ops (SaveV2, RestoreV2, MergeV2Checkpoints, ...) every SavedModel has, in the saver
  functions its saver_def names (`__inference__traced_save/restore_*`), called only by the saver_def's
  own nodes; or, in a TF1 main graph, fed by the saver_def's filename tensor.
- InitializeTableFromTextFile(V2) reading an asset: its filename must be bound to one of the SavedModel's
  assets, whose paths must stay inside assets/ (that check is never lifted).
- PrintV2 to stderr / stdout / the log (not `file://`), DecodeProtoV2 / EncodeProto with a built-in or
  inline descriptor (not a descriptor file).
trust_unsafe_code=True lifts the op checks (the user's own model); nothing lifts the asset path checks.
"""
from __future__ import annotations

import re
from collections import deque
from pathlib import Path
from typing import Any, Iterable

from ..errors import LoadError, UnsafeModelError

CHECKPOINT_OPS = frozenset({"Save", "SaveV2", "SaveSlices", "Restore", "RestoreV2", "RestoreSlice",
                            "MergeV2Checkpoints"})
# (family, why): an op whose name matches is refused
DENIED = [
    (r"PyFunc", "runs Python code"),
    (r"File|Reader|^Write|SummaryWriter|SummaryDbWriter|ImportEvent|ImmutableConst|Vocab|Remap|RecordInput"
     r"|Save|Restore|Checkpoint|MemoryCache", "reads or writes files"),
    (r"Dataset|Iterator", "runs a tf.data pipeline (file readers, caches, snapshots)"),
    (r"^Debug", "sends tensors to debugger files or servers"),
    (r"Rpc|Collective|Nccl|^_?(Host)?(Send|Recv)$|^Xla(Send|Recv)|^_Xla(Send|Recv)|DataService|Distributed",
     "talks to other processes or machines"),
]
_DENIED = [(re.compile(p), why) for p, why in DENIED]
SAFE_OPS = frozenset({"ShardedFilename", "ShardedFilespec"})  # string formatting of checkpoint names, no I/O


def denied_family(op: str) -> str | None:
    """Why an op of this type is refused wherever it appears (None: allowed, or checked by its use)."""
    if op in SAFE_OPS:
        return None
    for pattern, why in _DENIED:
        if pattern.search(op):
            return why
    return None


_PRINT_STREAMS = {"stderr", "stdout", "log(info)", "log(warning)", "log(error)"}


def check_saved_model(folder: str | Path, trust_unsafe_code: bool = False) -> None:
    """Refuse a SavedModel whose graphs hold I/O, Python or network ops (UnsafeModelError naming the op,
    node and function), or whose assets point outside its folder. Unreadable is a LoadError."""
    root = Path(folder)
    sm = _read(root)
    for mg in sm.meta_graphs:
        _check_assets(root, mg)
        if not trust_unsafe_code:
            _GraphScan(root, mg).run()


def _read(root: Path) -> Any:
    from google.protobuf import text_format
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import saved_model_pb2

    from .limits import check_fits_memory

    pb, pbtxt = root / "saved_model.pb", root / "saved_model.pbtxt"
    path = pb if pb.is_file() else pbtxt
    try:
        nbytes = path.stat().st_size
        check_fits_memory(4 * nbytes, f"{path}: parsing this graph")
        sm = saved_model_pb2.SavedModel()
        if path is pb:
            sm.ParseFromString(path.read_bytes())
        else:
            text_format.Parse(path.read_text(), sm)
    except (OSError, DecodeError, text_format.ParseError, UnicodeDecodeError, RecursionError, ValueError) as exc:
        raise LoadError(f"{root}: not a readable SavedModel ({type(exc).__name__}: {exc})") from exc
    return sm


def _check_assets(root: Path, mg: Any) -> None:
    from .paths import check_relative_member

    assets = root.resolve() / "assets"
    for asset in mg.asset_file_def:
        check_relative_member(assets, asset.filename, what=f"{root}: asset '{asset.tensor_info.name}'")


def _node_name(ref: str) -> str:
    return ref.lstrip("^").split(":")[0]


def _called(node: Any) -> set[str]:
    """Functions a node calls: by op name, or through func / list(func) attributes."""
    out = {node.op}
    for value in node.attr.values():
        if value.HasField("func"):
            out.add(value.func.name)
        if value.HasField("list"):
            out.update(f.name for f in value.list.func)
    return out


class _GraphScan:
    def __init__(self, root: Path, mg: Any):
        self.root, self.mg = root, mg
        self.functions = {f.signature.name: f for f in mg.graph_def.library.function}
        self.main = {n.name: n for n in mg.graph_def.node}
        saver = mg.saver_def
        self.saver_nodes = {_node_name(t) for t in (saver.save_tensor_name, saver.restore_op_name) if t}
        self.saver_fns = set()
        for name in self.saver_nodes:
            if name in self.main:
                self.saver_fns |= _called(self.main[name]) & set(self.functions)
        self.filename_node = _node_name(saver.filename_tensor_name) if saver.filename_tensor_name else None
        self.assets = {_node_name(a.tensor_info.name) for a in mg.asset_file_def}

    def run(self) -> None:
        for node in self.main.values():
            self._check_calls(node, None)
            self._check_node(node, None)
        for name, fn in self.functions.items():
            for node in fn.node_def:
                self._check_calls(node, name)
                self._check_node(node, name)

    def _refuse(self, node: Any, fn: str | None, why: str) -> None:
        where = f"function '{fn}'" if fn else "the main graph"
        raise UnsafeModelError(
            f"{self.root}: refused to load: {where} holds the TensorFlow op '{node.op}' (node '{node.name}'), "
            f"which {why}; TensorFlow would run it while loading or predicting. If this is your own model, "
            "pass --trust-unsafe-code (trust_unsafe_code=True)")

    def _check_calls(self, node: Any, fn: str | None) -> None:
        saver_calls = _called(node) & self.saver_fns
        if saver_calls and not (fn is None and node.name in self.saver_nodes):
            raise UnsafeModelError(
                f"{self.root}: refused to load: {'function ' + repr(fn) if fn else 'the main graph'} calls the "
                f"checkpoint function '{sorted(saver_calls)[0]}' (node '{node.name}'), which writes files; only "
                "the saver_def may. If this is your own model, pass --trust-unsafe-code (trust_unsafe_code=True)")

    def _check_node(self, node: Any, fn: str | None) -> None:
        op = node.op
        if op in CHECKPOINT_OPS:
            if fn in self.saver_fns or (fn is None and self._fed_by_saver(node)):
                return
            self._refuse(node, fn, "reads or writes checkpoint files outside the saver_def's own functions")
        if op == "PrintV2":
            stream = node.attr["output_stream"].s.decode("utf-8", "replace") if "output_stream" in node.attr else ""
            if stream and stream not in _PRINT_STREAMS:
                self._refuse(node, fn, f"prints to '{stream}' (a file)")
            return
        if op in ("DecodeProtoV2", "EncodeProto"):
            source = node.attr["descriptor_source"].s if "descriptor_source" in node.attr else b""
            if source not in (b"", b"local://") and not source.startswith(b"bytes://"):
                self._refuse(node, fn, f"reads a descriptor file ({source[:100]!r})")
            return
        if op in ("InitializeTableFromTextFile", "InitializeTableFromTextFileV2"):
            if not self._reads_asset(node, fn):
                self._refuse(node, fn, "reads a file that is not one of the SavedModel's assets")
            return
        why = denied_family(op)
        if why:
            self._refuse(node, fn, why)

    def _fed_by_saver(self, node: Any) -> bool:
        """TF1 main graph: the op's file prefix (input 0) derives from the saver_def's filename tensor."""
        if not self.filename_node or not node.input:
            return False
        return self.filename_node in self._ancestors([node.input[0]])

    def _ancestors(self, refs: Iterable[str]) -> set[str]:
        seen: set[str] = set()
        todo = deque(_node_name(r) for r in refs)
        while todo and len(seen) < 100_000:
            name = todo.popleft()
            if name in seen or name not in self.main:
                continue
            seen.add(name)
            todo.extend(_node_name(r) for r in self.main[name].input)
        return seen

    def _reads_asset(self, node: Any, fn: str | None) -> bool:
        if len(node.input) < 2:
            return False
        source = _node_name(node.input[1])
        if fn is None:  # TF1: the asset tensor the loader feeds with the asset's path
            return source in self.assets
        args = [a.name for a in self.functions[fn].signature.input_arg]
        if source not in args:
            return False  # a constant or computed path
        concrete = self.mg.object_graph_def.concrete_functions.get(fn)
        if concrete is None:
            return False
        bound = list(concrete.bound_inputs)
        index = args.index(source) - (len(args) - len(bound))  # captured inputs come last
        if index < 0 or bound[index] >= len(self.mg.object_graph_def.nodes):
            return False
        return self.mg.object_graph_def.nodes[bound[index]].WhichOneof("kind") == "asset"
