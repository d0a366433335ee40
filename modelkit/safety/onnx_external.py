"""The external-data locations an ONNX file names, read from its protobuf wire format without the `onnx`
package, so a runtime-only install (`modelkit[run-onnx]`: numpy + onnxruntime) checks them as strictly as
a full one.

Only the messages that can hold tensors are walked (the rest is skipped by length, never copied): the
model's graph, functions and training graphs; a graph's nodes, initializers and sparse initializers; a
node's attributes; an attribute's tensors, graphs and sparse tensors (at any depth: If / Loop / Scan
bodies); a sparse tensor's values and indices. That is every tensor `onnx.external_data_helper` visits,
plus sparse tensors and training graphs. A singular message field written more than once is merged, as
protobuf parsers do (its occurrences concatenated), so a location cannot hide in a second copy of a field.
Bytes that are not valid protobuf wire format are a LoadError; field numbers (onnx.proto) below.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

from ..errors import LoadError

MAX_DEPTH = 100  # nested messages, as protobuf's own parsers allow by default

# message kind -> {field number: (kind of the field's message, repeated?)}
_FIELDS: dict[str, dict[int, tuple[str, bool]]] = {
    "model": {7: ("graph", False), 20: ("training", True), 25: ("function", True)},
    "training": {1: ("graph", False), 2: ("graph", False)},
    "graph": {1: ("node", True), 5: ("tensor", True), 15: ("sparse", True)},
    "function": {7: ("node", True), 11: ("attribute", True)},
    "node": {5: ("attribute", True)},
    "attribute": {5: ("tensor", False), 6: ("graph", False), 10: ("tensor", True), 11: ("graph", True),
                  22: ("sparse", False), 23: ("sparse", True)},
    "sparse": {1: ("tensor", False), 2: ("tensor", False)},
}
_TENSOR_NAME, _TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION = 8, 13, 14
_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL


class _Corrupt(Exception):
    pass


def external_locations(path: str | os.PathLike) -> list[tuple[str, list[str]]]:
    """(tensor name, its 'location' values) for every tensor stored as external data; a LoadError when the file
    cannot be read or is not protobuf."""
    p = Path(path)
    try:
        data = p.read_bytes()  # the whole file, as onnx.load reads it; memoryviews walk it without copies
    except OSError as exc:
        raise LoadError(f"{p}: not a readable ONNX model ({type(exc).__name__}: {exc})") from exc
    try:
        return list(_walk(memoryview(data), "model", 0))
    except _Corrupt as exc:
        raise LoadError(f"{p}: not a readable ONNX model (DecodeError: {exc})") from None


def _varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end:
            raise _Corrupt("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift >= 70:
            raise _Corrupt("varint longer than 10 bytes")


def _fields(buf: memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """(field number, wire type, value) of one message: an int for varints, the bytes for length-delimited
    fields; fixed-width fields are skipped; groups and malformed tags are _Corrupt."""
    pos, end = 0, len(buf)
    while pos < end:
        tag, pos = _varint(buf, pos, end)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise _Corrupt("field number 0")
        if wire == 0:
            value, pos = _varint(buf, pos, end)
            yield number, wire, value
        elif wire == 2:
            length, pos = _varint(buf, pos, end)
            if length > end - pos:
                raise _Corrupt(f"field {number}: length {length} past the end of its message")
            yield number, wire, buf[pos:pos + length]
            pos += length
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
            if pos > end:
                raise _Corrupt(f"field {number}: truncated fixed-width value")
        else:  # 3 / 4: groups, which onnx.proto never uses; 6 / 7: not wire types
            raise _Corrupt(f"field {number}: wire type {wire} is not used by ONNX")


def _walk(buf: memoryview, kind: str, depth: int) -> Iterator[tuple[str, list[str]]]:
    if depth > MAX_DEPTH:
        raise _Corrupt(f"messages nested more than {MAX_DEPTH} deep")
    if kind == "tensor":
        yield from _tensor(buf)
        return
    fields = _FIELDS[kind]
    singular: dict[int, list[memoryview]] = {}
    for number, wire, value in _fields(buf):
        if wire != 2 or number not in fields:
            continue  # a known number with another wire type is an unknown field to protobuf too
        sub, repeated = fields[number]
        if repeated:
            yield from _walk(value, sub, depth + 1)  # type: ignore[arg-type]
        else:
            singular.setdefault(number, []).append(value)  # type: ignore[arg-type]
    for number, parts in singular.items():
        merged = parts[0] if len(parts) == 1 else memoryview(b"".join(bytes(x) for x in parts))
        yield from _walk(merged, fields[number][0], depth + 1)


def _tensor(buf: memoryview) -> Iterator[tuple[str, list[str]]]:
    name, location, external = "", [], False
    for number, wire, value in _fields(buf):
        if number == _TENSOR_DATA_LOCATION and wire == 0:
            external = (value & 0xFFFFFFFF) == _EXTERNAL  # an int32 enum: the low 32 bits; the last one wins
        elif number == _TENSOR_NAME and wire == 2:
            name = bytes(value).decode("utf-8", "replace")  # type: ignore[arg-type]
        elif number == _TENSOR_EXTERNAL_DATA and wire == 2:
            key, val = _entry(value)  # type: ignore[arg-type]
            if key == b"location":
                location.append(os.fsdecode(val))
    if external:
        yield name, location


def _entry(buf: memoryview) -> tuple[bytes, bytes]:
    """A StringStringEntryProto: (key, value), the last of each."""
    key = val = b""
    for number, wire, value in _fields(buf):
        if wire == 2 and number == 1:
            key = bytes(value)  # type: ignore[arg-type]
        elif wire == 2 and number == 2:
            val = bytes(value)  # type: ignore[arg-type]
    return key, val
