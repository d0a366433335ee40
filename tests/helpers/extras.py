"""What a pip extra of modelkit installs, read from pyproject.toml and this environment's package metadata:
the distributions it resolves to, their installed size, and a venv holding exactly them (plus modelkit).

Shared by tests/runtime/test_runtime_only.py (a runtime-only extra runs `modelkit.load(...).predict(...)` on
its own) and benchmarks/bench_install_size.py (its size against numpy + the engine alone). Nothing is
downloaded: the distributions are the ones installed in this environment, sized from their RECORD files.
"""
from __future__ import annotations

import os
import tomllib
import venv
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import Iterable

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = ROOT / "pyproject.toml"
SELF = "modelkit"


class MissingDistribution(LookupError):
    """A requirement of the extra is not installed in this environment (nothing can be measured or copied)."""


def _project(pyproject: Path = PYPROJECT) -> dict:
    return tomllib.loads(pyproject.read_text())["project"]


def extras(pyproject: Path = PYPROJECT) -> dict[str, list[str]]:
    """Every extra declared in pyproject.toml, as written."""
    return dict(_project(pyproject).get("optional-dependencies", {}))


def requirements(extra: str | None, core: bool = True, pyproject: Path = PYPROJECT) -> list[str]:
    """The requirements `pip install 'modelkit[extra]'` starts from: the core dependencies (unless core=False)
    and the extra's, with `modelkit[other]` references expanded; deduplicated, in order."""
    project = _project(pyproject)
    declared = project.get("optional-dependencies", {})
    out: list[str] = list(project.get("dependencies", [])) if core else []
    todo, seen = [extra] if extra else [], set()
    while todo:
        name = todo.pop(0)
        if name in seen:
            continue
        if name not in declared:
            raise KeyError(f"pyproject.toml declares no extra '{name}' (extras: {', '.join(declared)})")
        seen.add(name)
        for line in declared[name]:
            req = Requirement(line)
            if canonicalize_name(req.name) == SELF:
                todo.extend(sorted(req.extras))
            else:
                out.append(line)
    return list(dict.fromkeys(out))


def resolve(reqs: Iterable[str]) -> dict[str, metadata.Distribution]:
    """{canonical name: installed distribution} for the requirements and everything they require in turn
    (markers evaluated for this interpreter and for the extras each requirement asks for)."""
    found: dict[str, metadata.Distribution] = {}
    done: set[tuple[str, str]] = set()
    todo = [Requirement(r) for r in reqs]
    missing = []
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        for extra in sorted(req.extras) or [""]:
            if (name, extra) in done:
                continue
            done.add((name, extra))
            if name not in found:
                try:
                    found[name] = metadata.distribution(name)
                except metadata.PackageNotFoundError:
                    missing.append(str(req))
                    continue
            for line in found[name].requires or []:
                sub = Requirement(line)
                env = {"extra": extra}
                if sub.marker is None or sub.marker.evaluate(env):
                    todo.append(sub)
    if missing:
        raise MissingDistribution(f"not installed here: {', '.join(sorted(set(missing)))}")
    return found


def installed_bytes(dists: Iterable[metadata.Distribution]) -> int:
    """The size on disk of every file the distributions' RECORDs list (each file counted once)."""
    seen: set[str] = set()
    total = 0
    for dist in dists:
        for f in dist.files or []:
            path = str(dist.locate_file(f))
            if path in seen:
                continue
            seen.add(path)
            try:
                total += os.lstat(path).st_size
            except OSError:
                pass  # listed but absent (a .pyc never written)
    return total


def mb(nbytes: int) -> str:
    return f"{nbytes / 1e6:.0f} MB"


def _site(dist: metadata.Distribution) -> Path:
    return Path(str(dist.locate_file(""))).resolve()


def _relative_files(dist: metadata.Distribution) -> list[tuple[str, ...]]:
    """The distribution's files inside its site-packages folder (console scripts under ../bin are left out)."""
    return [PurePosixPath(str(f)).parts for f in dist.files or [] if ".." not in PurePosixPath(str(f)).parts]


def make_venv(dest: Path, dists: dict[str, metadata.Distribution], with_modelkit: bool = True) -> Path:
    """A venv (no pip) whose site-packages holds exactly `dists` and, with_modelkit, this checkout's package.
    Each distribution's files are symlinked from this environment: a folder whole when no other installed
    distribution has files in it (numpy/), else file by file (the namespace folder google/ of protobuf).
    Returns the venv's python."""
    venv.EnvBuilder(with_pip=False, symlinks=True, clear=True).create(dest)
    python = dest / "bin" / "python"
    site = next((dest / "lib").glob("python3*/site-packages"))
    allowed = {name for name in dists}
    files = {(_site(d), parts) for d in dists.values() for parts in _relative_files(d)}
    tops = {parts[0] for _, parts in files}
    shared: set[tuple[Path, tuple[str, ...]]] = set()  # folders that also hold files of other distributions
    for d in metadata.distributions():
        if canonicalize_name(d.metadata["Name"] or "") in allowed:
            continue
        root = _site(d)
        for parts in _relative_files(d):
            if parts and parts[0] in tops:
                shared.update((root, parts[:i]) for i in range(1, len(parts)))
    links: set[tuple[Path, tuple[str, ...]]] = set()
    for root, parts in files:
        for i in range(1, len(parts) + 1):
            if i == len(parts) or (root, parts[:i]) not in shared:
                links.add((root, parts[:i]))
                break
    for root, parts in sorted(links, key=lambda x: x[1]):
        target = site.joinpath(*parts)
        if target.exists() or target.is_symlink():
            continue  # two distributions list the same file
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(root.joinpath(*parts))
    if with_modelkit:  # the checkout's package, without its metadata (modelkit never reads its own)
        (site / SELF).symlink_to(ROOT / SELF, target_is_directory=True)
    return python

