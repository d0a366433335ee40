"""Routes: a hop tries the routes of its pair (modelkit.converters.registry.ROUTES) in order until one converts
with parity. A route that fails with a typed conversion failure (ROUTE_FAILURES) hands over to the next
route; the one taken, and why the others failed, go into the artifact's manifest
(`extra.route = {"taken": name, "tried": [{"route", "type", "error"}, ...]}`) and the ConversionResult.
The user's own errors (an existing output, bad options or inputs, a file Keras cannot load, a custom class
no imported module registers) stop at once: no other route would do better (except a LayerCallError, a layer Keras
could not run under this route's backend, when a route of another backend is left); so does a vacuous check
(the reference's outputs do not vary on the samples: every route's check would be as empty). When every route fails, one
error gives every route's reason; a pair with one route raises that route's error unchanged.

Routes of one pair may need different Keras backends (tf2onnx under TensorFlow, torch.onnx under torch):
run_routes tries, in this process, the routes it is given; convert() (modelkit.convert) hands the rest to
a child with the next route's backend, passing on what was tried (`last=False`: return the failures
instead of raising).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from .. import errors
from .._text import progress
from ..errors import (
    ConversionError,
    EngineNotInstalledError,
    LayerCallError,
    ParityError,
    RouteNotApplicableError,
    SourceRefusedError,
    UnsupportedConversionError,
    VacuousParityError,
)
from ..formats import Format
from .planning import listed_names
from .registry import ROUTES, EdgeSpec, route_table, routes

# failures after which the next route runs; EngineNotInstalledError: a route whose framework is missing
ROUTE_FAILURES = (UnsupportedConversionError, ConversionError, ParityError, EngineNotInstalledError)
MAX_MESSAGE = 2000  # characters of one route's error kept in a manifest


def run_routes(src: str, dest: str, source: str, target: str, routes: list[str] | None = None,
               tried: list[dict[str, Any]] | None = None, last: bool | None = None, **hop: Any) -> dict[str, Any]:
    """Try `routes` (names; default: the pair's first route and the ones after it that need the same
    backend) in order with run_hop's other arguments; return the summary of the first that converts. When
    all fail: if they are the pair's `last` (default: whether no route is left), raise (one route: its own
    error; several: combined_error); else return {"failed": tried, "path": dest} for the caller to go on."""
    from .hop import run_hop

    done = list(tried or [])
    specs = list(_routes(source, target))
    names = list(routes or [e.route for e in next_batch(specs, 0)])
    if last is None:
        last = names[-1] == specs[-1].route
    for name in names:
        try:
            return run_hop(src, dest, source, target, route=name, tried=done, **hop)
        except LayerCallError as exc:  # a layer Keras could not run under this backend: the next backend's may
            if last:
                raise
            done.append(failure(name, exc))
            progress(f"{source} -> {target}: route '{name}' failed ({type(exc).__name__}): {clipped(_text(exc), 300)}")
            return {"failed": done, "path": dest}  # this child's other routes share its backend
        except ROUTE_FAILURES as exc:
            if isinstance(exc, SourceRefusedError) or (last and name == names[-1] and not done):
                raise  # the only route tried: its own error, unchanged
            done.append(failure(name, exc))
            if isinstance(exc, VacuousParityError):  # the reference proves nothing: no later route's check would
                raise combined_error(src, source, target, done) from exc
            if not isinstance(exc, RouteNotApplicableError):  # a route not for this model is no news
                progress(f"{source} -> {target}: route '{name}' failed ({type(exc).__name__}): "
                         f"{clipped(_text(exc), 300)}")
    if last:
        raise combined_error(src, source, target, done)
    return {"failed": done, "path": dest}


def _routes(source: str, target: str) -> tuple[EdgeSpec, ...]:
    return routes(Format(source), Format(target))


def failure(route: str, exc: BaseException) -> dict[str, Any]:
    """A failed route as the manifest records it (a kept parity-failed artifact named by `kept`)."""
    entry: dict[str, Any] = {"route": route, "type": type(exc).__name__, "error": _text(exc)}
    report = getattr(exc, "report", None)
    if isinstance(report, dict):
        entry["report"] = report  # for the combined ParityError; dropped from the manifest's copy
        if report.get("candidate") and Path(str(report["candidate"])).name.count(".parity-failed"):
            entry["kept"] = str(report["candidate"])
    return entry


def for_manifest(tried: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in t.items() if k != "report"} for t in tried]


def combined_error(src: str, source: str, target: str, tried: list[dict[str, Any]]) -> Exception:
    """Every route failed: one typed error with each route's reason. A ParityError when a route converted
    but failed parity (its artifact is kept), UnsupportedConversionError when every route refused, else
    ConversionError. Routes that were not for this model (RouteNotApplicableError) give no reason; when one route is
    left, its own error is raised."""
    tried = relevant(tried) or tried
    if len(tried) == 1:
        cls = getattr(errors, tried[0]["type"], None)
        if isinstance(cls, type) and issubclass(cls, errors.ReportedError):
            return cls(tried[0]["error"], tried[0].get("report"))
        if isinstance(cls, type) and issubclass(cls, ConversionError):
            return cls(tried[0]["error"])
    reasons = "; ".join(f"route '{t['route']}' ({t['type']}): {t['error']}" for t in tried)
    message = f"{Path(src).name}: no route converts {source} to {target}: {reasons}"
    parity = [t for t in tried if _is(t["type"], ParityError)]
    if parity:
        cls = getattr(errors, parity[0]["type"])
        return cls(message, parity[0].get("report"))
    if all(_is(t["type"], UnsupportedConversionError) for t in tried):
        return UnsupportedConversionError(message)
    return ConversionError(message)


def relevant(tried: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The failed routes worth naming: not those that found they were not for this model."""
    return [t for t in tried if not _is(t.get("type", ""), RouteNotApplicableError)]


def _is(type_name: str, base: type) -> bool:
    cls = getattr(errors, type_name, None)
    return isinstance(cls, type) and issubclass(cls, base)


def _text(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


# ------------------------------------------------------------------------------------------------
# Choosing routes before any work: `route` (options={"route": ...} / --route) and options a route lacks

def forced_routes(value: Any, pairs: list[tuple[Format, Format]]) -> set[str]:
    """The route names asked for ('torch', 'torch,unrolled' or a list); each must be a route of a planned
    pair, else UnsupportedConversionError listing the route table."""
    if value is None:
        return set()
    names = set(listed_names(value))
    known = {r.name for pair in pairs for r in ROUTES.get(pair, ())}
    unknown = sorted(names - known)
    if unknown:
        raise UnsupportedConversionError(
            f"no planned conversion has a route named {', '.join(repr(n) for n in unknown)}; routes per pair "
            f"(tried in this order): {route_table()}")
    return names


def hop_routes(source: Format, target: Format, forced: set[str], options: dict[str, Any],
               config: dict[str, Any] | None = None) -> tuple[list[EdgeSpec], list[dict[str, Any]]]:
    """(routes this hop may try, in order; routes skipped before any work, as failures): a forced name
    keeps only that route of a pair that has it; a route for layers the model (its config.json) does not
    have is left out (support.ROUTE_SCOPE: 'unrolled' needs a recurrent layer); a route that does not take
    an option the user set (that another route of the pair takes) is skipped, so an option never silently
    goes unapplied."""
    from .support import route_applies

    all_routes = list(routes(source, target))
    chosen = [e for e in all_routes if e.route in forced] or all_routes
    if config is not None and source == Format.KERAS:
        chosen = [e for e in chosen if e.route in forced or route_applies(config, target, e.route)] or chosen[:1]
    known = {k for e in all_routes for k in e.options}
    keep, skipped = [], []
    for e in chosen:
        lacking = sorted(k for k in options if k in known and k not in e.options)
        if lacking:
            skipped.append({"route": e.route, "type": "UnsupportedConversionError",
                            "error": f"route '{e.route}' does not take option(s) {', '.join(lacking)}"})
        else:
            keep.append(e)
    if not keep:
        raise UnsupportedConversionError(
            f"no route converts {source.value} to {target.value} with the options given: "
            + "; ".join(s["error"] for s in skipped))
    return keep, skipped


def next_batch(specs: list[EdgeSpec], start: int) -> list[EdgeSpec]:
    """The routes from `start` that one child can try: consecutive ones needing the same backend."""
    batch = [specs[start]]
    for e in specs[start + 1:]:
        if e.backend != batch[0].backend:
            break
        batch.append(e)
    return batch


def clipped(text: str, limit: int) -> str:
    """`text` cut to about `limit` characters at a word boundary, with "..." where it was cut (a line cut
    mid-word read as the whole reason: "... express only )"); the full text is in the manifest (extra.route)."""
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0].rstrip(",;:")
    return f"{cut} ..."


def describe(route: dict[str, Any] | None) -> str | None:
    """"torch (tf2onnx failed: ...)" for a hop that did not take its first route; None otherwise."""
    tried = relevant((route or {}).get("tried") or ())
    if not tried:
        return None
    why = "; ".join(f"{t['route']} failed: {clipped(t['error'], 160)}" for t in tried)
    return f"route '{route['taken']}' ({why})"


def made_by_tf2onnx_from_keras(src: str | Path) -> bool:
    """Whether the ONNX file `src` is one modelkit made from a Keras model by the tf2onnx route (its manifest says
    so): the hop after it may then ask for torch.onnx's export of the same model instead (SourceRouteError)."""
    from .. import manifest as _manifest
    from ..errors import ManifestError

    try:
        m = _manifest.read(Path(src))
    except ManifestError:  # a retry only; the error stands without it
        return False
    route = ((m.extra or {}).get("route") or {}).get("taken") if m is not None else None
    return route == "tf2onnx" and bool(m.source) and m.source.get("format") == "keras"
