"""A static scan of pickles, done before torch unpickles anything: pickletools only reads the opcodes.

Every pickle may name only the globals torch itself writes: tensor rebuilders, storages, OrderedDict,
TorchScript classes (`__torch__.*`, compiled from the archive's own code, never imported) and a few plain
builtins. Anything else (`os.system`, `posix.system`, `subprocess.Popen`, `builtins.eval`, ...) is an
UnsafeModelError, and nothing lifts it: modelkit never needs such a pickle.

Pickles are read as streams (a member is never read whole) with at most MAX_PICKLE_BYTES read, and a
stream may hold several pickles in a row: torch's legacy (non-zip) `torch.load` format is five
consecutive pickles (magic number, protocol, sys info, the object, storage keys) followed by raw tensor
bytes, and torch unpickles each of them with the full unpickler. `check_pickle_stream` scans all of them.
Which members of a torch archive are scanned: modelkit.safety.torch_archive.
"""
from __future__ import annotations

import io
import pickletools
from typing import IO, Any

from ..errors import LoadError, UnsafeModelError
from .limits import MAX_PICKLE_BYTES, size

ALLOWED_EXACT = frozenset({
    ("collections", "OrderedDict"), ("torch", "Size"), ("torch", "device"), ("torch", "dtype"),
    ("torch._tensor", "_rebuild_from_type_v2"), ("torch.nn.parameter", "Parameter"),
    ("torch", "Tensor"), ("torch.storage", "UntypedStorage"), ("torch.storage", "TypedStorage"),
    ("torch", "UntypedStorage"),
    *{("builtins", n) for n in ("set", "frozenset", "slice", "complex", "tuple", "list", "dict", "int", "float",
                                "bool", "str", "bytes", "bytearray")},
})
_TORCH_DTYPES = frozenset({"float16", "float32", "float64", "bfloat16", "int8", "int16", "int32", "int64",
                           "uint8", "bool", "complex64", "complex128", "half", "float", "double", "long", "int",
                           "short"})
_STRING_OPS = frozenset({"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING",
                         "SHORT_BINSTRING"})
TORCH_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER: a legacy torch.load stream
LEGACY_PICKLES = 5  # magic number, protocol version, sys info, the object, storage keys; then raw bytes


def allowed_global(module: str, name: str) -> bool:
    if module == "__torch__" or module.startswith("__torch__."):
        return True  # TorchScript classes: compiled from the archive's code/ by TorchScript, not imported
    if (module, name) in ALLOWED_EXACT:
        return True
    if module == "torch" and (name.endswith("Storage") or name in _TORCH_DTYPES):
        return True
    if module == "torch._utils" and name.startswith("_rebuild_"):
        return True
    return module == "torch.jit._pickle"  # TorchScript's list / tag builders


class CappedReader:
    """A read-only view of a stream that refuses to read past `cap` bytes (pickletools reads an opcode's
    whole argument at once: a BINBYTES8 claiming 15 GiB must not be allocated)."""

    def __init__(self, raw: IO[bytes], cap: int, where: str):
        self.raw, self.left, self.where, self.pos = raw, cap, where, 0
        self.cap = cap

    def _take(self, data: bytes) -> bytes:
        self.left -= len(data)
        self.pos += len(data)
        return data

    def _refuse(self) -> UnsafeModelError:
        return UnsafeModelError(f"{self.where}: refused to load: its pickles are larger than {size(self.cap)}, "
                                "more than modelkit reads to check them (torch writes tensors outside pickles)")

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0 or n > self.left:
            raise self._refuse()
        return self._take(self.raw.read(n))

    def readline(self, limit: int = -1) -> bytes:
        line = self.raw.readline(self.left + 1)
        if len(line) > self.left:
            raise self._refuse()
        return self._take(line)

    def tell(self) -> int:
        return self.pos

    def at_end(self) -> bool:
        peek = getattr(self.raw, "peek", None)
        if peek is not None:
            return not peek(1)[:1]
        here = self.raw.tell()
        more = self.raw.read(1)
        self.raw.seek(here)
        return not more


def scan_one(stream: Any, where: str) -> tuple[list[tuple[str, str]], list[tuple[str, Any]]]:
    """Parse one pickle from the stream's position to its STOP: (globals it imports, its opcodes' names
    and arguments, kept only for tiny pickles). A pickle pickletools cannot parse is a LoadError."""
    found: list[tuple[str, str]] = []
    ops: list[tuple[str, Any]] = []
    strings: list[object] = []  # values pushed lately (strings, else None), for STACK_GLOBAL
    memo: dict[int, object] = {}
    try:
        for op, arg, _ in pickletools.genops(stream):
            name = op.name
            if len(ops) < 8:
                ops.append((name, arg))
            if name in ("GLOBAL", "INST"):
                module, _, attr = str(arg).partition(" ")
                found.append((module, attr))
                strings.append(None)
            elif name == "STACK_GLOBAL":
                if len(strings) < 2 or not all(isinstance(s, str) for s in strings[-2:]):
                    raise UnsafeModelError(f"{where}: a pickle imports a global built at run time "
                                           "(STACK_GLOBAL of computed names)")
                found.append((str(strings[-2]), str(strings[-1])))
                strings.append(None)
            elif name in _STRING_OPS:
                strings.append(arg if isinstance(arg, str) else arg.decode("latin-1") if isinstance(arg, bytes)
                               else None)
            elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
                memo[int(arg)] = strings[-1] if strings else None
            elif name == "MEMOIZE":
                memo[len(memo)] = strings[-1] if strings else None
            elif name in ("BINGET", "LONG_BINGET", "GET"):
                strings.append(memo.get(int(arg)))
            elif name not in ("PROTO", "FRAME"):
                strings.append(None)
            if len(strings) > 64:
                del strings[:-8]
    except (ValueError, EOFError, KeyError, IndexError, TypeError, UnicodeDecodeError) as exc:  # parse errors
        raise LoadError(f"{where}: not a readable pickle ({type(exc).__name__}: {exc})") from exc
    return found, ops


def pickle_globals(data: bytes, where: str) -> list[tuple[str, str]]:
    """The (module, name) pairs one pickle would import, read from its opcodes; unparsable is a LoadError."""
    return scan_one(io.BytesIO(data), where)[0]


def _check_globals(found: list[tuple[str, str]], where: str) -> None:
    for module, name in found:
        if not allowed_global(module, name):
            raise UnsafeModelError(f"{where}: refused to load: a pickle inside would import and call "
                                   f"'{module}.{name}' (only torch's tensor and storage rebuilders are allowed)")


def check_pickle(data: bytes, where: str) -> None:
    """One pickle held in memory (its first; see check_pickle_stream for streams)."""
    _check_globals(pickle_globals(data, where), where)


def _is_magic(ops: list[tuple[str, Any]]) -> bool:
    values = [arg for name, arg in ops if name not in ("PROTO", "FRAME", "STOP")]
    return len(values) == 1 and values[0] == TORCH_MAGIC_NUMBER


def check_pickle_stream(raw: IO[bytes], where: str, strict: bool = True, cap: int = MAX_PICKLE_BYTES) -> None:
    """Scan every pickle at the start of a stream, whatever its protocol (0 and 1 have no header byte).

    The first must parse (when strict: torch would unpickle it); after a torch magic number, the next
    four must parse too (torch.load unpickles them all before the raw tensor bytes). Otherwise the scan
    goes on while the following bytes still parse as pickles: the first that does not is raw data.
    Not strict (a member torch never unpickles): a first pickle that does not parse is raw data too."""
    stream = CappedReader(raw, cap, where)
    try:
        found, ops = scan_one(stream, where)
    except LoadError:
        if strict:
            raise
        return
    _check_globals(found, where)
    if _is_magic(ops):  # torch.load's legacy stream: four more pickles, all unpickled, then raw bytes
        for i in range(2, LEGACY_PICKLES + 1):
            found, _ = scan_one(stream, f"{where} (pickle {i} of a legacy torch.load stream)")
            _check_globals(found, f"{where} (pickle {i})")
        return
    count = 1
    while not stream.at_end():  # nothing unpickles past the first here; scanned anyway while they parse
        try:
            found, _ = scan_one(stream, f"{where} (pickle {count + 1})")
        except (LoadError, UnsafeModelError):  # not a pickle (or past the read cap): raw bytes, never unpickled
            return
        _check_globals(found, f"{where} (pickle {count + 1})")
        count += 1


def check_torch_archive(path: Any, trust_unsafe_code: bool = False) -> None:
    """Scan a torch archive before torch opens it; see modelkit.safety.torch_archive.check_torch_archive."""
    from .torch_archive import check_torch_archive as check

    check(path, trust_unsafe_code=trust_unsafe_code)
