"""Errors of the serving layer, each with the HTTP status a request that hits it gets.

Input validation errors from modelkit.spec (InputError and subclasses) map to 400 as well.
"""
from __future__ import annotations

from ..errors import InputError, ModelkitError


class ServingError(ModelkitError):
    """Base of serving errors; `status` is the HTTP status code of the response."""

    status = 500


class BadRequest(ServingError, ValueError):
    status = 400


class ModelNotFound(ServingError, LookupError):
    status = 404


class MethodNotAllowed(ServingError):
    status = 405


class PayloadTooLarge(ServingError, ValueError):
    status = 413


class Unavailable(ServingError):
    """Not ready, shutting down, or the model's queue is full."""

    status = 503


class QueueFull(Unavailable):
    pass


class Retired(Unavailable):
    """The version was swapped out between routing and submission (the caller retries once)."""


class PackagingError(ModelkitError, ValueError):
    """An artifact cannot be packaged for the requested server."""


def status_of(exc: BaseException) -> int:
    if isinstance(exc, ServingError):
        return exc.status
    if isinstance(exc, InputError):
        return 400
    return 500
