"""The converter registry: the route table (every way to convert each (source, target) pair, in the
order they are tried) and a planner over the pairs.

ROUTES is the one place that says which converter functions exist and in which order a pair tries
them, like TVM's ONNX frontend picks a converter per op from an explicit table. Each function registers
its backend, tolerance and options with @converter in its own module; the modules import nothing heavy
at module level, so loading the registry is cheap. A function that registers without a row in ROUTES,
or a row whose function never registers, fails at load time. Trying the routes of a hop in order, and
recording the one taken, is modelkit.converters.routes.
"""
from __future__ import annotations

import importlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import UnsupportedConversionError
from ..formats import Format


@dataclass(frozen=True)
class Route:
    """One way to convert a pair: a short name (`--route NAME`) and its function ("module:function")."""

    name: str
    func: str


_K, _O = Format.KERAS, Format.ONNX
# (source, target) -> its routes, tried in this order: when one fails with a typed conversion failure
# (UnsupportedConversionError, ConversionError, ParityError), the next one runs
ROUTES: dict[tuple[Format, Format], tuple[Route, ...]] = {
    (_K, _O): (Route("tf2onnx", "modelkit.converters.keras_onnx:keras_to_onnx"),
               Route("torch", "modelkit.converters.keras_onnx_torch:keras_to_onnx_torch")),
    (_K, Format.SAVED_MODEL): (Route("export-archive", "modelkit.converters.keras_saved_model:keras_to_saved_model"),),
    (_K, Format.TFLITE): (Route("converter", "modelkit.converters.keras_tflite:keras_to_tflite"),
                          Route("unrolled", "modelkit.converters.keras_tflite_unrolled:keras_to_tflite_unrolled"),
                          Route("loop", "modelkit.converters.keras_tflite_loop:keras_to_tflite_loop")),
    (_K, Format.TORCHSCRIPT): (Route("trace", "modelkit.converters.keras_torchscript:keras_to_torchscript"),),
    (_K, Format.TORCH_EXPORT): (Route("export", "modelkit.converters.keras_pt2:keras_to_pt2"),
                                Route("unrolled", "modelkit.converters.keras_pt2_unrolled:keras_to_pt2_unrolled")),
    (_K, Format.EXECUTORCH): (Route("xnnpack", "modelkit.converters.keras_executorch:keras_to_executorch"),),
    (_O, Format.TVM): (Route("relax", "modelkit.targets.tvm.edge:onnx_to_tvm"),),
    (_O, Format.OPENVINO): (Route("frontend", "modelkit.converters.onnx_openvino:onnx_to_openvino"),),
}


@dataclass(frozen=True)
class Tolerance:
    """Parity bounds for one edge. A hop fails when any bound is exceeded on any output."""

    atol: float = 1e-5
    min_cosine: float = 0.99999
    min_argmax_agreement: float = 0.0  # float formats gate on atol; lossy edges gate on this
    # an output above atol may be judged at float32's own error on it (modelkit.converters._float64); an atol the
    # user passes is their bar, kept as given
    float32_floor: bool = True
    # min_cosine over every case at once, not per case: a lossy hop's loose bounds, where one uncertain sample of a
    # 3-class softmax at batch 1 (0.45 / 0.35 against 0.33 / 0.47) is a cosine of 0.958 with the accuracy held (nc188)
    pooled_cosine: bool = False

    def to_dict(self) -> dict[str, float]:
        return {"atol": self.atol, "min_cosine": self.min_cosine,
                "min_argmax_agreement": self.min_argmax_agreement}


@dataclass(frozen=True)
class EdgeSpec:
    """One registered route of a pair: what its function needs (backend, options) and what it promises."""

    source: Format
    target: Format
    name: str
    func: Callable[..., dict[str, Any]]
    backend: str | None  # Keras backend the edge needs (runs in a child process with it)
    tolerance: Tolerance
    options: dict[str, Any] = field(default_factory=dict)  # option name -> default
    route: str = "default"  # its name in ROUTES

    @property
    def pair(self) -> tuple[Format, Format]:
        return self.source, self.target

    @property
    def func_path(self) -> str:
        return f"{self.func.__module__}:{self.func.__name__}"


_SPECS: dict[str, EdgeSpec] = {}  # "module:function" -> its registration
_EDGES: dict[tuple[Format, Format], tuple[EdgeSpec, ...]] = {}  # pair -> its routes, in ROUTES order
_ROW: dict[str, tuple[tuple[Format, Format], str]] = {
    r.func: (pair, r.name) for pair, routes in ROUTES.items() for r in routes}


def converter(source: Format | str, target: Format | str, *, backend: str | None = None,
              tolerance: Tolerance = Tolerance(), options: dict[str, Any] | None = None
              ) -> Callable[[Callable[..., dict[str, Any]]], Callable[..., dict[str, Any]]]:
    """Register `func(src: Path, dest: Path, **options) -> dict` as a route source -> target.

    Unknown formats fail here, at import; so does a function without its row in ROUTES (or a row for
    another pair) and a second function under the same name.
    """
    src, dst = Format.parse(source), Format.parse(target)
    if backend is not None:
        from .._backend import check_backend

        check_backend(backend)

    def register(func: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
        path = f"{func.__module__}:{func.__name__}"
        row = _ROW.get(path)
        if row is None or row[0] != (src, dst):
            listed = ", ".join(r.func for r in ROUTES.get((src, dst), ())) or "none"
            raise ValueError(f"{path} is not a route {src.value} -> {dst.value} in modelkit.converters.registry.ROUTES "
                             f"(listed for that pair: {listed}); add its row to the table")
        if path in _SPECS and _SPECS[path].func is not func:
            raise ValueError(f"route {src.value} -> {dst.value} '{row[1]}' is registered twice ({path})")
        _SPECS[path] = EdgeSpec(src, dst, func.__name__, func, backend, tolerance, dict(options or {}), row[1])
        return func

    return register


def _load() -> dict[tuple[Format, Format], tuple[EdgeSpec, ...]]:
    if not _EDGES:
        for path in _ROW:
            importlib.import_module(path.split(":", 1)[0])
        missing = [path for path in _ROW if path not in _SPECS]
        if missing:
            raise ValueError(f"routes in modelkit.converters.registry.ROUTES whose function never registered with "
                             f"@converter: {', '.join(missing)}")
        _EDGES.update({pair: tuple(_SPECS[r.func] for r in routes) for pair, routes in ROUTES.items()})
    return _EDGES


def edges() -> dict[tuple[Format, Format], EdgeSpec]:
    """Every pair and its first route (importing the route modules the first time)."""
    return {pair: specs[0] for pair, specs in _load().items()}


def spec_of(func_path: str) -> EdgeSpec | None:
    """The registered route whose function is `func_path` ("module:function", as manifests record it)."""
    _load()
    return _SPECS.get(func_path)


def routes(source: Format, target: Format) -> tuple[EdgeSpec, ...]:
    """The routes of a pair, in the order they are tried."""
    found = _load().get((source, target))
    if not found:
        raise UnsupportedConversionError(f"no converter from {source.value} to {target.value}; "
                                         f"valid pairs: {valid_pairs()}")
    return found


def get_edge(source: Format, target: Format, route: str | None = None) -> EdgeSpec:
    """The route called `route` of a pair (its first route when None)."""
    found = routes(source, target)
    if route is None:
        return found[0]
    for spec in found:
        if spec.route == route:
            return spec
    raise UnsupportedConversionError(f"{source.value} -> {target.value} has no route '{route}'; its routes: "
                                     f"{', '.join(s.route for s in found)}")


def route_table() -> str:
    """"keras->onnx: tf2onnx, torch; ..." for messages."""
    return "; ".join(f"{s.value}->{t.value}: {', '.join(r.name for r in rs)}" for (s, t), rs in ROUTES.items())


def valid_pairs() -> str:
    return ", ".join(f"{s.value}->{t.value}" for s, t in sorted(_load(), key=lambda k: (k[0].value, k[1].value)))


def plan(source: Format, target: Format) -> list[EdgeSpec]:
    """The shortest chain of pairs from source to target (breadth-first search), each as its first route."""
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
