"""The converter registry: one edge per (source, target) pair, and a planner over the edges.

Edges register with @converter in their own modules, listed in EDGE_MODULES. Those modules import
nothing heavy at module level, so loading the registry is cheap.
"""
from __future__ import annotations

import importlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import UnsupportedConversionError
from ..formats import Format

EDGE_MODULES = (
    "modelkit.convert.keras_onnx",
    "modelkit.convert.keras_saved_model",
    "modelkit.convert.keras_tflite",
    "modelkit.convert.keras_torchscript",
    "modelkit.convert.keras_pt2",
    "modelkit.convert.onnx_tvm",
)


@dataclass(frozen=True)
class Tolerance:
    """Parity bounds for one edge. A hop fails when any bound is exceeded on any output."""

    atol: float = 1e-5
    min_cosine: float = 0.99999
    min_argmax_agreement: float = 0.0  # float formats gate on atol; lossy edges gate on this

    def to_dict(self) -> dict[str, float]:
        return {"atol": self.atol, "min_cosine": self.min_cosine,
                "min_argmax_agreement": self.min_argmax_agreement}


@dataclass(frozen=True)
class EdgeSpec:
    source: Format
    target: Format
    name: str
    func: Callable[..., dict[str, Any]]
    backend: str | None  # Keras backend the edge needs (runs in a child process with it)
    tolerance: Tolerance
    options: dict[str, Any] = field(default_factory=dict)  # option name -> default

    @property
    def func_path(self) -> str:
        return f"{self.func.__module__}:{self.func.__name__}"


_EDGES: dict[tuple[Format, Format], EdgeSpec] = {}
_loaded = False


def converter(source: Format | str, target: Format | str, *, backend: str | None = None,
              tolerance: Tolerance = Tolerance(), options: dict[str, Any] | None = None
              ) -> Callable[[Callable[..., dict[str, Any]]], Callable[..., dict[str, Any]]]:
    """Register `func(src: Path, dest: Path, **options) -> dict` as the edge source -> target.

    Unknown formats fail here, at import; so does a second edge for the same pair.
    """
    src, dst = Format.parse(source), Format.parse(target)
    if backend is not None:
        from .._backend import check_backend

        check_backend(backend)

    def register(func: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
        key = (src, dst)
        if key in _EDGES and _EDGES[key].func is not func:
            raise ValueError(f"edge {src.value} -> {dst.value} is registered twice "
                             f"({_EDGES[key].func_path} and {func.__module__}:{func.__name__})")
        _EDGES[key] = EdgeSpec(src, dst, func.__name__, func, backend, tolerance, dict(options or {}))
        return func

    return register


def edges() -> dict[tuple[Format, Format], EdgeSpec]:
    """All registered edges (importing the edge modules the first time)."""
    global _loaded
    if not _loaded:
        for mod in EDGE_MODULES:
            importlib.import_module(mod)
        _loaded = True
    return dict(_EDGES)


def get_edge(source: Format, target: Format) -> EdgeSpec:
    key = (source, target)
    all_edges = edges()
    if key not in all_edges:
        raise UnsupportedConversionError(f"no converter from {source.value} to {target.value}; "
                                         f"valid pairs: {valid_pairs()}")
    return all_edges[key]


def valid_pairs() -> str:
    return ", ".join(f"{s.value}->{t.value}" for s, t in sorted(edges(), key=lambda k: (k[0].value, k[1].value)))


def plan(source: Format, target: Format) -> list[EdgeSpec]:
    """The shortest chain of edges from source to target (breadth-first search)."""
    if source == target:
        raise UnsupportedConversionError(f"the model is already {source.value}")
    graph: dict[Format, list[EdgeSpec]] = {}
    for (s, _t), e in sorted(edges().items(), key=lambda kv: (kv[0][0].value, kv[0][1].value)):
        graph.setdefault(s, []).append(e)
    prev: dict[Format, EdgeSpec] = {}
    queue, seen = deque([source]), {source}
    while queue:
        node = queue.popleft()
        for e in graph.get(node, []):
            if e.target in seen:
                continue
            prev[e.target] = e
            seen.add(e.target)
            queue.append(e.target)
    if target not in prev:
        reachable = sorted(f.value for f in seen if f != source)
        raise UnsupportedConversionError(
            f"no chain of converters leads from {source.value} to {target.value}; from {source.value} "
            f"modelkit reaches: {', '.join(reachable) or 'nothing'} (valid pairs: {valid_pairs()})")
    chain = [prev[target]]
    while chain[0].source != source:
        chain.insert(0, prev[chain[0].source])
    return chain
