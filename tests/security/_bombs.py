"""Zip members that inflate to many GiB, written in well under a second: a deflate stream of zeros is a
repeated block (each MiB after a full flush compresses to the same bytes), and its CRC-32 is computed by
composing the CRC's affine map, not by running it over the GiB. The member's sizes are declared honestly."""
from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

MIB = 1 << 20


def _deflated_zeros(mib: int) -> bytes:
    """A raw deflate stream that inflates to `mib` MiB of zeros."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(bytes(MIB)) + c.flush(zlib.Z_FULL_FLUSH)
    again = c.compress(bytes(MIB)) + c.flush(zlib.Z_FULL_FLUSH)
    assert block == again  # after a full flush, nothing refers back: each MiB is the same bytes
    return block * mib + c.flush()


def _crc_of_zeros(mib: int) -> int:
    """zlib.crc32(bytes(mib * MIB)) without touching mib MiB: crc(state, zeros) is affine in state."""
    def apply(table: list[int], state: int) -> int:  # table[0] = f(0), table[i + 1] = f(1 << i)
        out = table[0]
        for i in range(32):
            if state >> i & 1:
                out ^= table[i + 1] ^ table[0]
        return out

    one = [zlib.crc32(bytes(MIB), 0)] + [zlib.crc32(bytes(MIB), 1 << i) for i in range(32)]
    result, power, n = 0, one, mib
    while n:
        if n & 1:
            result = apply(power, result)
        power = [apply(power, v) for v in power]  # f∘f, tabulated on the same 33 inputs
        n >>= 1
    return result


def add_bomb(zout: zipfile.ZipFile, path: Path, name: str, gib: float) -> None:
    """Append member `name` that inflates to `gib` GiB of zeros to zout (opened for writing on `path`)."""
    mib = int(gib * 1024)
    stream = _deflated_zeros(mib)
    info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    with zout.open(info, "w", force_zip64=True) as fh:  # the deflate bytes, written as they are
        fh.write(stream)
    info.compress_type = zipfile.ZIP_DEFLATED  # the central directory (written at close) declares the truth
    info.file_size = mib * MIB
    info.CRC = _crc_of_zeros(mib)
    zout.fp.flush()
    with open(path, "r+b") as raw:  # and so does the local header, rewritten in place (same length)
        raw.seek(info.header_offset)
        raw.write(info.FileHeader(zip64=True))


def copy_with_bomb(src: Path, dest: Path, name: str, gib: float, replace: bool = False) -> Path:
    """A copy of the zip at src with a bomb member `name` added (or replacing the member of that name)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w") as zout:
        for item in zin.infolist():
            if not (replace and item.filename == name):
                zout.writestr(item, zin.read(item.filename))
        add_bomb(zout, dest, name, gib)
    return dest
