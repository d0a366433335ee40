"""Model formats and their detection by content (magic bytes and structure), never by suffix alone."""
from __future__ import annotations

import enum
import json
import os
import stat
import zipfile
from pathlib import Path

from .errors import FormatError

MANIFEST_SUFFIX = ".modelkit.json"


class Format(str, enum.Enum):
    KERAS = "keras"
    ONNX = "onnx"
    SAVED_MODEL = "saved_model"
    TFLITE = "tflite"
    TORCHSCRIPT = "torchscript"
    TORCH_EXPORT = "pt2"
    TVM = "tvm"
    EXECUTORCH = "executorch"
    OPENVINO = "openvino"

    @property
    def suffix(self) -> str:
        """The file or folder suffix used for new artifacts of this format."""
        return _SUFFIX[self]

    @classmethod
    def parse(cls, name: "str | Format") -> "Format":
        """Format from a user-given name ('onnx', 'tflite', 'saved_model', 'pt2', ...)."""
        if isinstance(name, Format):
            return name
        key = str(name).strip().lower().replace("-", "_")
        key = _ALIASES.get(key, key)
        for f in cls:
            if f.value == key:
                return f
        import difflib

        names = [f.value for f in cls] + list(_ALIASES)
        close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
        hint = f" (did you mean '{_ALIASES.get(close[0], close[0])}'?)" if close else ""
        raise FormatError(f"unknown format '{name}'{hint}; valid formats: {', '.join(f.value for f in cls)}")


_SUFFIX = {
    Format.KERAS: ".keras", Format.ONNX: ".onnx", Format.SAVED_MODEL: "_saved_model",
    Format.TFLITE: ".tflite", Format.TORCHSCRIPT: ".torchscript.pt", Format.TORCH_EXPORT: ".pt2",
    Format.EXECUTORCH: ".pte",
    Format.TVM: ".tvm.so", Format.OPENVINO: "_openvino",
}
_ALIASES = {"pte": "executorch", "et": "executorch",
            "savedmodel": "saved_model", "tf_saved_model": "saved_model", "litert": "tflite",
            "torch_export": "pt2", "export": "pt2", "jit": "torchscript", "ts": "torchscript",
            "ov": "openvino", "openvino_ir": "openvino"}
# An OpenVINO IR made by modelkit is a folder `NAME_openvino/` holding these two files (one rename moves both,
# so a reader never sees the graph of one conversion with the weights of another); a bare IR made elsewhere is
# its .xml file, with the .bin of the same stem beside it
OPENVINO_XML, OPENVINO_BIN = "model.xml", "model.bin"


# formats whose artifact is a folder named NAME<suffix> (no file extension: cnn_saved_model, cnn.int8_openvino)
FOLDER_SUFFIXES = tuple(s for s in _SUFFIX.values() if not s.startswith("."))


def strip_suffix(name: str) -> str:
    """An artifact's file name without its format's suffix: `cnn.int8.tflite` -> `cnn.int8`, `cnn_openvino` -> `cnn`
    (the name unchanged when no format's suffix ends it)."""
    for suffix in sorted(_SUFFIX.values(), key=len, reverse=True):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def manifest_path(artifact: str | os.PathLike) -> Path:
    """Where the manifest of an artifact lives: beside it, `<artifact>.modelkit.json`."""
    p = Path(artifact)
    return p.with_name(p.name.rstrip("/") + MANIFEST_SUFFIX)


def check_regular(path: str | os.PathLike) -> None:
    """Refuse a path that exists but is neither a regular file nor a folder (a FIFO, a device, a socket):
    opening or reading one can block forever or never end. Stats only; never opens the path."""
    p = Path(path)
    try:
        mode = os.stat(p).st_mode
    except OSError:
        return  # missing or unreadable: the caller's own error says so
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise FormatError(f"{p}: not a regular file ({_kind(mode)}); refusing to read it as a model")


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "a special file"


def _read_head(p: Path, n: int = 64) -> bytes:
    """The first n bytes of a regular file, opened without blocking and checked again after opening
    (the path may have been swapped for a FIFO or a device since it was stat'ed)."""
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise FormatError(f"{p}: cannot open ({exc.strerror or exc})") from exc
    with os.fdopen(fd, "rb") as fh:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise FormatError(f"{p}: not a regular file ({_kind(mode)}); refusing to read it as a model")
        return fh.read(n)


def detect(path: str | os.PathLike) -> Format:
    """Detect the format of a model file or folder from its content.

    Raises FormatError if the path does not exist, is not a regular file or folder (FIFO, device,
    socket: refused before it is opened), or matches no known format.
    """
    p = Path(path)
    if not p.exists():
        raise FormatError(f"no such file or folder: {p}")
    check_regular(p)
    if p.is_dir():
        if (p / "saved_model.pb").is_file() or (p / "saved_model.pbtxt").is_file():
            return Format.SAVED_MODEL
        if (p / OPENVINO_XML).is_file():
            # the pair modelkit writes: its engine's checks judge the content (a DTD, a damaged graph)
            if (p / OPENVINO_BIN).exists() or _looks_like_openvino_ir(_read_head(p / OPENVINO_XML, 512)):
                return Format.OPENVINO
            raise FormatError(f"{p}: holds {OPENVINO_XML}, but it is not an OpenVINO IR (no <net> root)")
        raise FormatError(f"{p} is a folder but not a TF SavedModel (no saved_model.pb inside) nor an OpenVINO IR "
                          f"(no {OPENVINO_XML} inside)")
    head = _read_head(p)
    if len(head) < 8:
        raise FormatError(f"{p}: file too short ({len(head)} bytes) to be a model")
    if head[4:8] == b"TFL3":
        return Format.TFLITE
    if head[4:6] == b"ET" and head[6:8].isdigit():  # an ExecuTorch program's flatbuffer identifier (ET12)
        return Format.EXECUTORCH
    if head[:4] == b"\x7fELF":
        return _detect_elf(p)
    if head[:4] == b"PK\x03\x04":
        return _detect_zip(p)
    if head[:8] == b"\x89HDF\r\n\x1a\n":  # a legacy Keras .h5 model (the keras engine checks its config)
        return Format.KERAS
    if _looks_like_onnx(head):
        return Format.ONNX
    if _looks_like_openvino_ir(_read_head(p, 512)):  # a bare IR .xml (made elsewhere; its .bin beside)
        return Format.OPENVINO
    if p.name.endswith(MANIFEST_SUFFIX) and len(p.name) > len(MANIFEST_SUFFIX):
        artifact = p.with_name(p.name[:-len(MANIFEST_SUFFIX)])
        raise FormatError(f"{p}: the manifest of {artifact.name}, not a model (modelkit inspect {artifact})")
    raise FormatError(f"{p}: not a model file of a known format "
                      f"(valid: {', '.join(f.value for f in Format)})")


def _looks_like_onnx(head: bytes) -> bool:
    # ModelProto starts with field 1 (ir_version, varint): tag 0x08, then a small version number,
    # followed by another field tag (producer_name 0x12, opset_import 0x42, graph 0x3a, ...).
    return head[0] == 0x08 and 3 <= head[1] <= 32 and head[2] in (0x12, 0x1a, 0x22, 0x2a, 0x32, 0x3a, 0x42)


def _looks_like_openvino_ir(head: bytes) -> bool:
    """An OpenVINO IR's .xml: an optional XML declaration, comments and DTD, then the root element <net ...>.
    (A DTD is detected here and refused by the engine's checks, modelkit.safety.openvino.)"""
    import re

    text = head.decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")
    text = re.sub(r"^<\?xml[^>]*\?>\s*", "", text)
    prolog = re.compile(r"<!--.*?-->\s*|<!DOCTYPE[^\[>]*(\[.*?\]\s*)?>\s*", re.DOTALL)
    while (m := prolog.match(text)) is not None:
        text = text[m.end():]
    return re.match(r"<net[\s>]", text) is not None


def openvino_files(path: str | os.PathLike) -> tuple[Path, Path]:
    """(xml, bin) of an OpenVINO IR artifact: a folder holding model.xml + model.bin, or a bare .xml file with
    the .bin of its stem beside it."""
    p = Path(path)
    if p.is_dir():
        return p / OPENVINO_XML, p / OPENVINO_BIN
    return p, p.with_suffix(".bin")


def _detect_zip(p: Path) -> Format:
    try:
        with zipfile.ZipFile(p) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, UnicodeDecodeError,
            NotImplementedError) as exc:  # a damaged central directory: bad names, bogus versions
        raise FormatError(f"{p}: damaged zip archive ({type(exc).__name__}: {exc})") from exc
    if "config.json" in names and ("metadata.json" in names or "model.weights.h5" in names):
        return Format.KERAS
    if any(n.endswith("/archive_format") for n in names) or any("/models/" in n and n.endswith(".json")
                                                                for n in names):
        return Format.TORCH_EXPORT
    if any(n.endswith("/data.pkl") for n in names) and any("/code/" in n for n in names):
        return Format.TORCHSCRIPT
    if names and all(n.endswith(".npy") for n in names):
        raise FormatError(f"{p}: a numpy .npz of arrays ({', '.join(n[:-4] for n in names[:4])}"
                          f"{', ...' if len(names) > 4 else ''}), data and not a model: pass it to --data, "
                          "--input, --calibration-data or --eval-data")
    raise FormatError(f"{p}: a zip archive, but not a .keras, TorchScript or .pt2 model")


def _detect_elf(p: Path) -> Format:
    mp = manifest_path(p)
    if mp.is_file():
        try:
            if json.loads(mp.read_text()).get("format") == Format.TVM.value:
                return Format.TVM
        except (OSError, ValueError) as exc:
            raise FormatError(f"{mp}: unreadable manifest ({exc})") from exc
    raise FormatError(f"{p}: a shared library without a TVM manifest ({mp.name}); "
                      "modelkit only loads libraries it compiled")
