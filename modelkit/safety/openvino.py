"""Static checks of an OpenVINO IR (an .xml graph and its .bin weights) before OpenVINO reads either.

An IR carries no code, but OpenVINO's reader trusts what the .xml declares: the byte range of every
constant in the .bin, the shapes it builds. These checks refuse, with a typed error and before any engine
opens the files:

- a .xml or .bin that is not a regular file, or (for modelkit's folder layout) a link or a path that leaves
  the artifact's folder: the IR names no other file, and the engine passes the .bin it checked explicitly;
- a .xml over `MAX_XML_BYTES` (env `MODELKIT_MAX_OPENVINO_XML_BYTES`, default 256 MiB: graphs of large
  models are a few MB), and any DTD (`<!DOCTYPE`, `<!ENTITY`: entity expansion, external entities);
- a .xml that is not well-formed XML, or whose root is not <net> with <layers>: LoadError;
- a constant whose `offset` / `size` are not non-negative integers, whose range leaves the .bin (a
  truncated or swapped .bin), or whose size is less than its shape and element type need: LoadError;
- a declared shape whose element count is absurd (over 2**40 elements): UnsafeModelError.
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path

from ..errors import LoadError, UnsafeModelError
from ..formats import OPENVINO_BIN, OPENVINO_XML, check_regular

MAX_XML_BYTES = int(os.environ.get("MODELKIT_MAX_OPENVINO_XML_BYTES", str(256 * 1024**2)))
MAX_ELEMENTS = 2**40
# bits per element of OpenVINO's element types (ov::element::Type names as the IR writes them)
_BITS = {"f64": 64, "i64": 64, "u64": 64, "f32": 32, "i32": 32, "u32": 32, "f16": 16, "bf16": 16, "i16": 16,
         "u16": 16, "i8": 8, "u8": 8, "boolean": 8, "f8e4m3": 8, "f8e5m2": 8, "f8e8m0": 8, "nf4": 4, "u4": 4,
         "i4": 4, "f4e2m1": 4, "u3": 3, "u2": 2, "u1": 1, "u6": 6}
_DTD = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


def check_openvino_ir(xml: Path, bin_: Path, folder: Path | None = None) -> int:
    """Check an IR's two files (see the module docstring); returns the number of layers.

    folder: the artifact's folder (modelkit's layout): both files must be plain files inside it, no links."""
    for f in (xml, bin_):
        if folder is not None:
            if f.is_symlink():
                raise UnsafeModelError(f"{f}: a symlink inside an OpenVINO IR folder is refused")
            if f.exists() and not f.resolve().is_relative_to(folder.resolve()):
                raise UnsafeModelError(f"{f}: resolves outside the artifact's folder {folder}")
        if not f.exists():
            which = "graph (.xml)" if f == xml else "weights (.bin)"
            raise LoadError(f"{f}: missing; an OpenVINO IR is a {OPENVINO_XML} graph with its {OPENVINO_BIN} "
                            f"weights beside it (the {which} is not there)")
        check_regular(f)
        if f.is_dir():
            raise LoadError(f"{f}: a folder, not a file of an OpenVINO IR")
        if f.stat().st_nlink > 1 and folder is not None:
            raise UnsafeModelError(f"{f}: a hard link to another file; an IR folder holds its own files")
    xml_bytes = xml.stat().st_size
    if xml_bytes > MAX_XML_BYTES:
        raise UnsafeModelError(f"{xml}: {xml_bytes} bytes of IR graph, over the limit of {MAX_XML_BYTES} "
                               "(MODELKIT_MAX_OPENVINO_XML_BYTES)")
    data = xml.read_bytes()
    if _DTD.search(data):
        raise UnsafeModelError(f"{xml}: declares a DTD (<!DOCTYPE / <!ENTITY>); an OpenVINO IR has none, and "
                               "entities can expand without bound or name other files")
    root = _parse(xml, data)
    layers = root.find("layers")
    if layers is None:
        raise LoadError(f"{xml}: an OpenVINO IR without <layers>")
    weights = bin_.stat().st_size
    count = 0
    for layer in layers.iter("layer"):
        count += 1
        d = layer.find("data")
        if d is None:
            continue
        where = f"{xml}: layer '{layer.get('name', '?')}' ({layer.get('type', '?')})"
        elements = _elements(d.get("shape"), where)
        if "offset" in d.attrib or "size" in d.attrib:
            offset, size = _int(d.get("offset"), "offset", where), _int(d.get("size"), "size", where)
            if offset + size > weights:
                raise LoadError(f"{where}: its weights are bytes {offset}..{offset + size} of a {weights}-byte "
                                f"{bin_.name} (truncated, or the .bin of another model)")
            bits = _BITS.get(d.get("element_type", ""))
            if bits is not None and elements is not None and size < math.ceil(elements * bits / 8):
                raise LoadError(f"{where}: {size} bytes of weights for {elements} elements of "
                                f"{d.get('element_type')} ({math.ceil(elements * bits / 8)} needed)")
    return count


def _parse(xml: Path, data: bytes):  # -> xml.etree.ElementTree.Element
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(data)
    except (ET.ParseError, ValueError) as exc:
        raise LoadError(f"{xml}: not a well-formed OpenVINO IR graph ({exc})") from exc
    if root.tag != "net":
        raise LoadError(f"{xml}: the root element is <{root.tag}>, not an OpenVINO IR's <net>")
    return root


def _int(value: str | None, name: str, where: str) -> int:
    if value is None or not value.strip().isdigit():
        raise LoadError(f"{where}: {name}='{value}' is not a non-negative integer")
    return int(value)


def _elements(shape: str | None, where: str) -> int | None:
    """Elements of a declared static shape ("3, 4"; "" is a scalar); None when a dimension is dynamic."""
    if shape is None:
        return None
    dims = [s.strip() for s in shape.split(",") if s.strip()]
    total = 1
    for dim in dims:
        if not dim.isdigit():
            return None  # "?", "-1", "1..10": dynamic, nothing to allocate from it
        total *= int(dim)
        if total > MAX_ELEMENTS:
            raise UnsafeModelError(f"{where}: declares shape [{shape}], more than {MAX_ELEMENTS} elements")
    return total
