"""Work a user's module does when imported: `--import train.py` names a script that registers a custom layer and also
trains, saves or exports at its top level (no `if __name__ == "__main__":` guard). modelkit imports that module in
this process and again in every child that loads the model (one per format family), so the script re-trains each
time and may overwrite the .keras file being converted. Found by reading the file (ast), never by running it."""
from __future__ import annotations

import ast
from pathlib import Path

# calls that do a script's work rather than define things: training, search, evaluation, saving, an entry point
WORK = frozenset({"fit", "fit_generator", "train", "evaluate", "search", "save", "save_model", "export",
                  "save_weights", "main", "run_training"})


def top_level_work(path: Path) -> list[tuple[str, int]]:
    """(call name, line) of each call in WORK that runs when `path` is imported: in its top-level statements,
    outside function and class bodies and outside `if __name__ == "__main__":`. [] when the file cannot be parsed
    (importing it reports that error with its line)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"), filename=str(path))
    except (OSError, SyntaxError, ValueError):
        return []
    found: list[tuple[str, int]] = []
    for stmt in tree.body:
        if _is_main_guard(stmt):
            continue
        found += [(name, node.lineno) for node in _executed(stmt) if (name := _work_call(node))]
    return found


def warning_for(spec: str) -> str | None:
    """The warning line for an `--import` spec (a .py path, or a module name looked up as a file in the current
    folder, where a user's script lives; installed modules are not read) whose module works when imported."""
    path = Path(spec) if spec.endswith(".py") else Path.cwd() / f"{spec.replace('.', '/')}.py"
    work = top_level_work(path) if path.is_file() else []
    return describe(path, work) if work else None


def describe(path: Path, work: list[tuple[str, int]]) -> str:
    """One warning line naming the calls and where they are, and the fix."""
    calls = ", ".join(f"{name}() at line {line}" for name, line in work[:4]) + (", ..." if len(work) > 4 else "")
    return (f"warning: {path.name} runs {calls} when imported; --import runs it here and again in every process "
            f"that loads the model (it re-trains or re-saves each time): put that code under "
            f"`if __name__ == \"__main__\":`")


def _is_main_guard(stmt: ast.stmt) -> bool:
    if not isinstance(stmt, ast.If) or not isinstance(stmt.test, ast.Compare) or len(stmt.test.comparators) != 1:
        return False
    sides = [stmt.test.left, stmt.test.comparators[0]]
    names = {s.id for s in sides if isinstance(s, ast.Name)}
    texts = {s.value for s in sides if isinstance(s, ast.Constant)}
    return names == {"__name__"} and texts == {"__main__"} and isinstance(stmt.test.ops[0], ast.Eq)


def _executed(node: ast.AST):
    """The nodes under `node` that run when it runs: not the bodies of functions, lambdas and classes' methods."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        yield child
        yield from _executed(child)


def _work_call(node: ast.AST) -> str | None:
    if not isinstance(node, ast.Call):
        return None
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
    return name if name in WORK else None
