"""Static checks of the code inside torch archives, done before torch compiles or runs any of it.

TorchScript archives carry their program as Python-syntax source (code/__torch__/*.py) that torch.jit.load
compiles and predict runs. It can call any registered operator, and some of them touch files:
`torch.from_file(path, True, n)` creates and maps a file, `torch.save` writes one; operators outside
torch's own namespaces come from libraries someone loaded (custom ops, custom classes). The source is
parsed with `ast` (never run) and every name it uses is checked against a denylist of file, process and
network calls and an allowlist of operator namespaces.

torch.export programs (.pt2 models/*.json) name their operators as call targets (same rules), and carry
`guards_code`: Python expressions that `ExportedProgram.module()` pastes into a function with `exec`,
run on every call. A guard may only be an arithmetic / comparison expression over the inputs' sizes.

These are code checks: trust_unsafe_code=True (the user's own file) lifts them. Pickles are not code
here and their scan is never lifted (modelkit.safety.pickles).
"""
from __future__ import annotations

import ast
import re
from typing import Any

from ..errors import LoadError, UnsafeModelError

# operator namespaces torch itself registers for model computations (torch.ops.<ns>.<op>)
OP_NAMESPACES = frozenset({"aten", "prim", "prims", "quantized", "_quantized", "quantized_decomposed", "mkldnn",
                           "mkldnn_prepacked", "onednn", "sparse", "quantization", "rngprims", "profiler",
                           "higher_order", "xnnpack"})
CLASS_NAMESPACES = frozenset({"quantized", "_quantized", "xnnpack", "mkldnn", "onednn"})
# names that read or write files, load libraries or code, or reach the network
DENIED_NAMES = frozenset({"from_file", "save", "load", "_load_for_lite_interpreter", "load_library", "hub",
                          "rpc_async", "rpc_sync", "rpc_remote", "__import__", "__builtins__", "__globals__",
                          "__subclasses__", "__code__", "__reduce__", "__reduce_ex__"})
DENIED_ROOTS = frozenset({"os", "sys", "subprocess", "shutil", "socket", "builtins", "importlib", "pickle", "io",
                          "pathlib", "ctypes", "posix", "nt", "urllib", "http", "tempfile", "glob", "signal",
                          "threading", "runpy", "marshal", "types", "inspect", "gc", "numpy", "np"})
DENIED_BUILTINS = frozenset({"open", "exec", "eval", "compile", "__import__", "input", "breakpoint", "globals",
                             "locals", "vars", "setattr", "delattr"})


def check_torchscript_source(source: str, where: str) -> None:
    """Refuse TorchScript source that calls file, process or network APIs or operators from outside
    torch's own namespaces. Raises UnsafeModelError naming the call and the file."""
    try:
        tree = ast.parse(source, filename=where)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise LoadError(f"{where}: TorchScript source that cannot be parsed, so it cannot be checked "
                        f"({type(exc).__name__}: {exc})") from exc
    called = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) and
                                                   node.module else [])
            bad = [n for n in names if n.split(".")[0] not in ("__torch__", "torch")]
            if bad:
                _refuse(where, f"import {bad[0]}", getattr(node, "lineno", 0), "imports a Python module")
            continue
        if not isinstance(node, (ast.Attribute, ast.Name)):
            continue
        dotted = _dotted(node)
        if dotted is None:
            if isinstance(node, ast.Attribute) and node.attr in DENIED_NAMES:  # e.g. (x).save
                _refuse(where, f"….{node.attr}", node.lineno, "names a file, code or network API")
            continue
        why = _denied(dotted, is_call=isinstance(node, ast.Name) and id(node) in called)
        if why:
            _refuse(where, dotted, node.lineno, why)


def _dotted(node: ast.AST) -> str | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


def _denied(dotted: str, is_call: bool) -> str | None:
    parts = dotted.split(".")
    root = parts[0]
    if is_call and root in DENIED_BUILTINS:  # called: a local variable may be named `input`
        return "is a Python builtin that runs code or touches files"
    if root in DENIED_ROOTS:
        return "names a Python module outside torch"
    if root not in ("torch", "ops"):
        return None  # locals, self.<submodule>, __torch__ classes
    if any(p in DENIED_NAMES for p in parts[1:]):
        return "reads or writes files, loads code or reaches the network"
    rest = parts[1:]
    if root == "torch" and rest[:1] == ["ops"]:
        rest = rest[1:]
    elif root == "torch" and rest[:1] == ["classes"]:
        if len(rest) > 1 and rest[1] not in CLASS_NAMESPACES:
            return f"is a custom class from namespace '{rest[1]}', outside torch's own"
        return None
    elif root == "torch":
        return None  # torch.<op>: an aten operator (the denied ones are caught above)
    if rest and rest[0] not in OP_NAMESPACES:
        return f"is an operator from namespace '{rest[0]}', outside torch's own (a custom op)"
    return None


def _refuse(where: str, what: str, line: int, why: str) -> None:
    raise UnsafeModelError(f"{where} line {line}: refused to load: the TorchScript code calls '{what}', which {why}; "
                           "loading or running it could touch files or run code. If this is your own model, pass "
                           "--trust-unsafe-code (trust_unsafe_code=True)")


# ---------------------------------------------------------------------------------------- torch.export

# torch's sympy printer writes Max / Min / Abs / casts as these builtins (a causal conv: `max(1, L[...] - 2)`)
_GUARD_NAMES = frozenset({"L", "math", "inf", "torch", "IsNonOverlappingAndDenseIndicator",
                          "cast_symbool_to_symint_guardless", "max", "min", "abs", "int", "float", "bool", "round"})
_GUARD_ATTRS = frozenset({"size", "stride", "storage_offset", "dim", "numel", "shape", "isnan", "isinf",
                          "isfinite", "inf", "floor", "ceil", "trunc", "sqrt", "sym_float", "sym_int", "sym_max",
                          "sym_min", "sym_sqrt", "sym_not", "sym_ite"})
_GUARD_NODES = (ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.Compare, ast.Eq, ast.NotEq, ast.Lt, ast.LtE,
                ast.Gt, ast.GtE, ast.BinOp, ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow,
                ast.UnaryOp, ast.USub, ast.UAdd, ast.Not, ast.Constant, ast.Subscript, ast.Name, ast.Attribute,
                ast.Call, ast.Load, ast.Tuple, ast.Slice)
_GUARD_STRING = re.compile(r"[\w.]*")


def check_export_program(program: Any, where: str) -> None:
    """A serialized torch.export program (models/<name>.json): every operator target in torch's own
    namespaces and not a file operator; every guard a plain expression over input sizes."""
    guards = program.get("guards_code") if isinstance(program, dict) else None
    for guard in guards if isinstance(guards, list) else []:
        check_guard(guard, where)
    stack: list[Any] = [program]
    while stack:
        cur = stack.pop()
        if isinstance(cur, dict):
            target = cur.get("target")
            if isinstance(target, str) and target.startswith("torch.ops."):
                parts = target.split(".")
                ns = parts[2] if len(parts) > 2 else ""
                if ns not in OP_NAMESPACES or any(p in DENIED_NAMES for p in parts[3:]):
                    raise UnsafeModelError(
                        f"{where}: refused to load: the program calls operator '{target}', which is a custom op "
                        "or touches files. If this is your own model, pass --trust-unsafe-code "
                        "(trust_unsafe_code=True)")
            stack.extend(v for v in cur.values() if isinstance(v, (dict, list)))
        elif isinstance(cur, list):
            stack.extend(v for v in cur if isinstance(v, (dict, list)))


def check_guard(guard: Any, where: str) -> None:
    """A guard torch.export will paste into Python source and run: an expression of sizes, nothing else."""
    def refuse(why: str) -> None:
        raise UnsafeModelError(f"{where}: refused to load: guards_code entry {str(guard)[:120]!r} {why}; torch "
                               "would run it as Python on every call. If this is your own model, pass "
                               "--trust-unsafe-code (trust_unsafe_code=True)")

    if not isinstance(guard, str) or "\n" in guard or "\r" in guard or len(guard) > 10_000:
        refuse("is not a one-line expression")
    try:
        tree = ast.parse(guard, mode="eval")
    except (SyntaxError, ValueError, RecursionError) as exc:
        raise LoadError(f"{where}: guards_code entry {guard[:120]!r} is not a Python expression ({exc})") from exc
    for node in ast.walk(tree):
        if not isinstance(node, _GUARD_NODES):
            refuse(f"uses {type(node).__name__}")
        if isinstance(node, ast.Name) and node.id not in _GUARD_NAMES:
            refuse(f"names '{node.id}'")
        if isinstance(node, ast.Attribute) and node.attr not in _GUARD_ATTRS:
            refuse(f"reads attribute '{node.attr}'")
        if isinstance(node, ast.Call) and node.keywords:
            refuse("passes keyword arguments")
        if isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes)):
            if not isinstance(node.value, str) or not _GUARD_STRING.fullmatch(node.value):
                refuse("holds a string that is not a plain name")
