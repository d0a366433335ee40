"""modelkit.safety.onnx_external reads ONNX external-data locations from the protobuf wire format (no `onnx`
package, so `modelkit[run-onnx]` checks them too): it finds every tensor `onnx.external_data_helper` finds, in
subgraphs and functions too, plus sparse tensors; a field written twice is merged as protobuf merges it; bytes
that are not protobuf are a LoadError. tests/runtime/test_runtime_only.py runs the check where onnx is absent."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from modelkit.errors import LoadError, UnsafeModelError
from modelkit.safety import check_onnx_external_data
from modelkit.safety.onnx_external import MAX_DEPTH, external_locations

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.external_data_helper import _get_all_tensors, uses_external_data  # noqa: E402


def _external(name: str, location: str, values=(1.0, 2.0, 3.0)) -> TensorProto:
    t = numpy_helper.from_array(np.asarray(values, np.float32), name)
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    entry = t.external_data.add()
    entry.key, entry.value = "location", location
    return t


def _varint(n: int) -> bytes:
    out = b""
    while True:
        byte, n = n & 0x7F, n >> 7
        out += bytes([byte | (0x80 if n else 0)])
        if not n:
            return out


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def everywhere() -> onnx.ModelProto:
    """External tensors in an initializer, an If's branches (a Constant's attribute, a subgraph initializer), a
    sparse initializer and a local function's Constant."""
    then_g = helper.make_graph([helper.make_node("Constant", [], ["t"], value=_external("C", "c.bin"))], "then", [],
                               [helper.make_tensor_value_info("t", TensorProto.FLOAT, [3])])
    else_g = helper.make_graph([helper.make_node("Identity", ["S"], ["e"])], "else", [],
                               [helper.make_tensor_value_info("e", TensorProto.FLOAT, [3])], [_external("S", "s.bin")])
    graph = helper.make_graph(
        [helper.make_node("If", ["cond"], ["z"], then_branch=then_g, else_branch=else_g)], "g",
        [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [3])], [_external("W", "sub/w.bin")])
    indices = numpy_helper.from_array(np.array([0, 1], np.int64), "SPI")
    graph.sparse_initializer.append(helper.make_sparse_tensor(_external("SP", "sp.bin", (1.0, 2.0)), indices, [4]))
    fn = helper.make_function("local", "fn", ["a"], ["b"], [
        helper.make_node("Constant", [], ["k"], value=_external("F", "f.bin", (1.0,))),
        helper.make_node("Add", ["a", "k"], ["b"])], [helper.make_opsetid("", 17)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)],
                             functions=[fn])


def onnx_finds(model: onnx.ModelProto) -> dict[str, list[str]]:
    return {t.name: [e.value for e in t.external_data if e.key == "location"]
            for t in _get_all_tensors(model) if uses_external_data(t)}


def test_every_external_tensor_is_found(tmp_path):
    model = everywhere()
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    found = dict(external_locations(path))
    assert found == {**onnx_finds(model), "SP": ["sp.bin"]}  # onnx's helper skips sparse tensors
    assert set(found) == {"W", "C", "S", "SP", "F"}
    check_onnx_external_data(path)  # all inside the folder (missing files are onnxruntime's to report)


def test_a_second_copy_of_the_graph_is_merged(tmp_path):
    """Protobuf merges a singular field written twice: a location in a second `graph` field is still read."""
    late = onnx.GraphProto()
    late.initializer.append(_external("LATE", "/etc/passwd"))
    path = tmp_path / "m.onnx"
    path.write_bytes(everywhere().SerializeToString() + _field(7, late.SerializeToString()))
    assert dict(external_locations(path))["LATE"] == ["/etc/passwd"]
    assert "LATE" in onnx_finds(onnx.load(str(path), load_external_data=False))  # what a protobuf parser reads
    with pytest.raises(UnsafeModelError, match="external data of tensor 'LATE': absolute location"):
        check_onnx_external_data(path)


def test_every_location_entry_is_checked(tmp_path):
    t = _external("W", "w.bin")
    entry = t.external_data.add()
    entry.key, entry.value = "location", "../outside.bin"  # a reader keeping the last entry reads this one
    graph = helper.make_graph([], "g", [], [], [t])
    path = tmp_path / "m.onnx"
    path.write_bytes(helper.make_model(graph).SerializeToString())
    with pytest.raises(UnsafeModelError, match="contains '..'"):
        check_onnx_external_data(path)


def test_an_external_tensor_without_location_is_refused(tmp_path):
    t = _external("W", "w.bin")
    del t.external_data[:]
    path = tmp_path / "m.onnx"
    path.write_bytes(helper.make_model(helper.make_graph([], "g", [], [], [t])).SerializeToString())
    with pytest.raises(UnsafeModelError, match="tensor 'W': empty location"):
        check_onnx_external_data(path)


def test_a_location_that_is_not_utf8_is_still_checked(tmp_path):
    data = helper.make_model(helper.make_graph([], "g", [], [], [_external("W", "/etc/ZZ")])).SerializeToString()
    path = tmp_path / "m.onnx"
    path.write_bytes(data.replace(b"/etc/ZZ", b"/etc/\xff\xfe"))  # same length: the framing stays valid
    with pytest.raises(UnsafeModelError, match="absolute location"):
        check_onnx_external_data(path)


@pytest.mark.parametrize("data, why", [
    (b"\x08\x07\x12\x04junk" + b"\xff" * 40, "varint longer than 10 bytes"),
    (b"\x3a\x10\x0a", "past the end"),  # graph: 16 bytes announced, 1 there
    (b"\x3b\x3c", "wire type 3"),  # a group
    (b"\x00\x01", "field number 0"),
    (b"\x0d\x01\x02", "truncated fixed-width"),
])
def test_bytes_that_are_not_protobuf_are_load_errors(tmp_path, data, why):
    path = tmp_path / "bad.onnx"
    path.write_bytes(data)
    with pytest.raises(LoadError, match=f"not a readable ONNX model.*{why}"):
        external_locations(path)


def test_nesting_is_bounded(tmp_path):
    graph = b""  # written by hand: protobuf's own writer refuses this depth too
    for _ in range(MAX_DEPTH // 3 + 2):  # graph -> node -> attribute -> graph: three levels per subgraph
        graph = _field(1, _field(5, _field(6, graph)))
    path = tmp_path / "deep.onnx"
    path.write_bytes(_field(7, graph))
    with pytest.raises(LoadError, match="nested more than"):
        external_locations(path)


def test_mutated_files_agree_with_onnx(tmp_path):
    """Byte flips, truncations and insertions: whenever onnx reads the file, this reader reads it too and finds
    every external tensor onnx finds, at the same locations."""
    base = everywhere().SerializeToString()
    rng = random.Random(0)
    path = tmp_path / "f.onnx"
    agreed = 0
    for _ in range(400):
        data = bytearray(base)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(data))
            kind = rng.randrange(3)
            if kind == 0:
                data[at] ^= 1 << rng.randrange(8)
            elif kind == 1:
                del data[at:at + rng.randint(1, 8)]
            else:
                data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 4)))
            if not data:
                break
        path.write_bytes(bytes(data))
        try:
            theirs = onnx_finds(onnx.load(str(path), load_external_data=False))
        except Exception:  # noqa: BLE001 - onnx refused it; this reader may still walk the fields it needs
            continue
        ours = dict(external_locations(path))
        for name, locations in theirs.items():  # onnx hands over bytes that are not UTF-8 as they are
            name = name if isinstance(name, str) else name.decode("utf-8", "replace")
            decoded = [v if isinstance(v, str) else v.decode("utf-8", "surrogateescape") for v in locations]
            assert ours.get(name) == decoded, (name, locations, ours)
        agreed += 1
    assert agreed > 20  # enough files were readable for the comparison to mean something


def test_a_missing_file_is_a_load_error(tmp_path: Path):
    with pytest.raises(LoadError, match="not a readable ONNX model"):
        external_locations(tmp_path / "missing.onnx")
