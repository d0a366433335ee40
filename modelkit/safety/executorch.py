"""Static checks of an ExecuTorch program (.pte) before the runtime loads it: every value index is inside its plan.

ExecuTorch's verifier checks the flatbuffer's structure, and its loader most of the content, but not every index a
method holds: a plan whose `inputs` names value 1000000 of 3 loads, and the first execute() aborts the process
(`get_value(): assert failed (i < n_value_)`, SIGABRT; executorch 1.5.1, measured). So before the runtime sees the
file, each execution plan's inputs, outputs, chain inputs / outputs, instruction arguments (kernel and delegate
arguments, move, free and jump operands, operator, delegate and instruction indices) and tensor-list items are
checked against the plan's own lengths, reading the flatbuffer with the `flatbuffers` package (field slots from
ExecuTorch's program.fbs). A damaged or lying program is a LoadError.
"""
from __future__ import annotations

import mmap
import struct
from pathlib import Path
from typing import Any

from ..errors import LoadError

# union type codes in program.fbs (0 is NONE)
_TENSOR_LIST, _OPTIONAL_TENSOR_LIST = 10, 11
_KERNEL, _DELEGATE, _MOVE, _JUMP, _FREE = 1, 2, 3, 4, 5


class _Bad(Exception):
    """One index out of its range (the message says which)."""


def check_program(path: Path) -> int:
    """Check every execution plan of the program at `path`; returns the number of plans. LoadError when an index
    leaves its plan, or the flatbuffer cannot be read."""
    import flatbuffers  # a dependency of executorch

    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        buf = memoryview(mm)
        try:
            root = flatbuffers.table.Table(buf, flatbuffers.encode.Get(flatbuffers.packer.uoffset, buf, 0))
            plans = _vector(root, 6, buf)  # Program.execution_plan
            for i in range(plans[1]):
                _check_plan(_table(root, plans, i), buf)
            return plans[1]
        except _Bad as exc:
            raise LoadError(f"{path}: an ExecuTorch program with {exc}; refused before the runtime runs it") from None
        except (struct.error, IndexError, ValueError, TypeError, OverflowError) as exc:
            raise LoadError(f"{path}: damaged ExecuTorch program (its flatbuffer cannot be read: "
                            f"{type(exc).__name__})") from None
        finally:
            buf.release()  # the tables read through it hold it too: release it before the map closes


def _vector(table: Any, slot: int, buf: memoryview, size: int = 4) -> tuple[int, int]:
    """(start, length) of a vector field, its bytes checked to lie inside the buffer ((0, 0) when absent): a
    damaged length is refused here, never looped over."""
    off = table.Offset(slot)
    if not off:
        return 0, 0
    start, n = table.Vector(off), table.VectorLen(off)
    if start < 0 or start + n * size > len(buf):
        raise _Bad(f"a vector of {n} items past the end of the file")
    return start, n


def _ints(table: Any, slot: int, buf: memoryview) -> list[int]:
    import flatbuffers

    start, n = _vector(table, slot, buf)
    return [flatbuffers.encode.Get(flatbuffers.packer.int32, buf, start + 4 * i) for i in range(n)]


def _table(table: Any, span: tuple[int, int], i: int) -> Any:
    import flatbuffers

    pos = span[0] + 4 * i
    return flatbuffers.table.Table(table.Bytes, table.Indirect(pos))


def _scalar(table: Any, slot: int, packer: Any) -> int:
    off = table.Offset(slot)
    return table.Get(packer, table.Pos + off) if off else 0


def _union(table: Any, slot: int) -> tuple[int, Any]:
    """(type code, table) of a union field whose type is at `slot` and value at slot + 2."""
    import flatbuffers

    kind = _scalar(table, slot, flatbuffers.number_types.Uint8Flags)
    off = table.Offset(slot + 2)
    if not kind or not off:
        return 0, None
    return kind, flatbuffers.table.Table(table.Bytes, table.Indirect(table.Pos + off))


def _within(what: str, indices: list[int], n: int, allow_none: bool = False) -> None:
    for i in indices:
        if not (0 <= i < n or (allow_none and i == -1)):
            raise _Bad(f"{what} {i} out of range (the plan has {n})")


def _check_plan(plan: Any, buf: memoryview) -> None:
    import flatbuffers

    i32 = flatbuffers.number_types.Int32Flags
    values = _vector(plan, 8, buf)
    nv = values[1]
    _within("input value", _ints(plan, 10, buf), nv)
    _within("output value", _ints(plan, 12, buf), nv)
    n_ops, n_delegates = _vector(plan, 16, buf)[1], _vector(plan, 18, buf)[1]
    for v in range(nv):
        kind, val = _union(_table(plan, values, v), 4)
        if kind in (_TENSOR_LIST, _OPTIONAL_TENSOR_LIST):
            _within("tensor-list item", _ints(val, 4, buf), nv, allow_none=kind == _OPTIONAL_TENSOR_LIST)
    chains = _vector(plan, 14, buf)
    for c in range(chains[1]):
        chain = _table(plan, chains, c)
        _within("chain input value", _ints(chain, 4, buf), nv)
        _within("chain output value", _ints(chain, 6, buf), nv)
        instructions = _vector(chain, 8, buf)
        for k in range(instructions[1]):
            kind, args = _union(_table(chain, instructions, k), 4)
            if kind == _KERNEL:
                _within("operator", [_scalar(args, 4, i32)], n_ops)
                _within("kernel argument value", _ints(args, 6, buf), nv)
            elif kind == _DELEGATE:
                _within("delegate", [_scalar(args, 4, i32)], n_delegates)
                _within("delegate argument value", _ints(args, 6, buf), nv)
            elif kind == _MOVE:
                _within("move operand value", [_scalar(args, 4, i32), _scalar(args, 6, i32)], nv)
            elif kind == _JUMP:
                _within("jump condition value", [_scalar(args, 4, i32)], nv)
                _within("jump destination instruction", [_scalar(args, 6, i32)], instructions[1])
            elif kind == _FREE:
                _within("freed value", [_scalar(args, 4, i32)], nv)
