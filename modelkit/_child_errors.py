"""How a child's error crosses to its parent (modelkit._child): `error_payload` in the child, `rebuild` in the parent
(the same modelkit type, else the caller's class naming the type; one line, the child's traceback kept for --debug)."""
from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any

from . import errors


def error_payload(exc: BaseException) -> dict[str, Any]:
    """An exception as a child reports it to its parent (rebuilt there by `rebuild`)."""
    return {"type": type(exc).__name__, "message": str(exc) or _raised_at(exc),
            "traceback": "".join(traceback.format_exception(exc)), "report": _jsonable(getattr(exc, "report", None))}


def _raised_at(exc: BaseException) -> str:
    """For an exception without a message (a bare `assert` in an engine): where it was raised, so the one line
    the user sees says more than "AssertionError: AssertionError"."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "no message"
    last = frames[-1]
    return f"no message; raised at {'/'.join(Path(last.filename).parts[-2:])}:{last.lineno} in {last.name}"


def rebuild(err: dict[str, Any], fallback: type[errors.ModelkitError]) -> BaseException:
    """The child's error as an exception here: the same modelkit type, else `fallback` naming the type."""
    if err.get("type") == "KeyboardInterrupt":  # the child was stopped and did not say more
        return KeyboardInterrupt()
    cls = getattr(errors, err.get("type", ""), None)
    if isinstance(cls, type) and issubclass(cls, errors.ModelkitError):
        message = err["message"]
        if message.startswith(errors.KERAS_CALL_FAILED):  # raised inside a layer: Keras wrapped it
            message = _one_line(message)
        exc: BaseException = errors.retyped(cls, message, err.get("report"))
    else:
        exc = fallback(f"{err.get('type')}: {_one_line(err.get('message') or '')}")
    exc.child_traceback = err.get("traceback")
    return exc


def _one_line(message: str) -> str:
    """A message as the CLI prints it: Keras' "Exception encountered when calling X.call()." with its reason, or
    the first line; the rest stays in the child's traceback (--debug)."""
    return errors.first_line(Exception(message))


def _jsonable(obj: Any) -> Any:
    return obj.to_dict() if hasattr(obj, "to_dict") else obj
