"""Errors of the serving layer, each with the HTTP status a request that hits it gets.

Input validation errors from modelkit.spec (InputError and subclasses) map to 400 as well.
"""
from __future__ import annotations

from ..errors import InputError, ModelkitError, ResourceError


class ServingError(ModelkitError):
    """Base of serving errors; `status` is the HTTP status code of the response."""

    status = 500


class BadRequest(ServingError, ValueError):
    status = 400


class ModelNotFound(ServingError, LookupError):
    status = 404


class MethodNotAllowed(ServingError):
    status = 405


class RequestTimeout(ServingError):
    """The request body stopped arriving (no bytes for the body timeout)."""

    status = 408


class PayloadTooLarge(ServingError, ValueError):
    status = 413


class HeaderTooLarge(ServingError, ValueError):
    """The request head, a chunk-size line or the trailer section is over the size limit."""

    status = 431


class Unavailable(ServingError):
    """Not ready, shutting down, or the model's queue is full."""

    status = 503


class QueueFull(Unavailable):
    pass


class BodyBudgetExceeded(Unavailable):
    """Accepting this body would take the bytes buffered across all connections over the budget."""


class ShuttingDown(Unavailable):
    """The server is draining: a request that had not finished sending its body is refused."""


class Retired(Unavailable):
    """The version was swapped out between routing and submission (the caller retries once)."""


class BindError(ModelkitError, OSError):
    """The server cannot listen on the address it was given (port in use, no permission, bad host)."""


class PackagingError(ModelkitError, ValueError):
    """An artifact cannot be packaged for the requested server."""


def status_of(exc: BaseException) -> int:
    """The HTTP status for an error: its own for serving errors, 400 for bad inputs, 503 when the engine ran
    out of memory (the request may succeed later, or smaller), else 500."""
    if isinstance(exc, ServingError):
        return exc.status
    if isinstance(exc, InputError):
        return 400
    if isinstance(exc, ResourceError):
        return 503
    return 500
