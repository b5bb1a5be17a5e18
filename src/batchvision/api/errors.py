"""One place that turns exceptions into error responses, for every surface.

Each handler reduces what was raised to a `WireError` (status, code, safe message), applies the
rule that holds on every surface — a 5xx body never carries internal detail — and hands it to
the error table of the surface that owns the request's path (`Surface.path_prefixes`; the native
table for paths no surface claims).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match

from batchvision.api.surface import NativeErrors, Surface, WireError, surface_for_path
from batchvision.core.db import storage_is_full
from batchvision.core.errors import BatchVisionError, ErrorCode, describe_problems, out_of_storage

log = logging.getLogger(__name__)

_STATUS_CODES: dict[int, ErrorCode] = {
    HTTPStatus.NOT_FOUND: ErrorCode.NOT_FOUND,
    HTTPStatus.METHOD_NOT_ALLOWED: ErrorCode.METHOD_NOT_ALLOWED,
    HTTPStatus.REQUEST_ENTITY_TOO_LARGE: ErrorCode.PAYLOAD_TOO_LARGE,
    HTTPStatus.UNSUPPORTED_MEDIA_TYPE: ErrorCode.UNSUPPORTED_FORMAT,
    HTTPStatus.SERVICE_UNAVAILABLE: ErrorCode.OVERLOADED,
}
# 5xx codes whose message is advice for the client, not internal detail.
_SAFE_5XX = frozenset(
    {ErrorCode.MODEL_UNAVAILABLE, ErrorCode.OVERLOADED, ErrorCode.INSUFFICIENT_STORAGE}
)
INTERNAL = WireError(500, ErrorCode.INTERNAL_ERROR, "internal server error")
_NATIVE = NativeErrors()


def render(surfaces: Sequence[Surface], path: str, error: WireError) -> Response:
    """`error` in the language of the surface that owns `path`."""
    surface = surface_for_path(surfaces, path)
    return (surface.errors if surface else _NATIVE).render(error)


def _surfaces(request: Request) -> Sequence[Surface]:
    found: Sequence[Surface] = getattr(request.app.state, "surfaces", ())
    return found


def _answer(request: Request, error: WireError) -> Response:
    return render(_surfaces(request), request.url.path, error)


async def _batchvision_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BatchVisionError)
    status = exc.http_status
    if status >= 500 and exc.code not in _SAFE_5XX:
        return _internal_error(request, exc)
    return _answer(request, WireError(status, exc.code, exc.message, exc.headers or None))


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    message = describe_problems(exc.errors()) or "invalid request"
    return _answer(request, WireError(400, ErrorCode.INVALID_REQUEST, message))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code >= 500:
        return _internal_error(request, exc)
    code = _STATUS_CODES.get(exc.status_code, ErrorCode.INVALID_REQUEST)
    message = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    headers = dict(exc.headers or {}) or None
    if exc.status_code == HTTPStatus.METHOD_NOT_ALLOWED:
        headers = {**(headers or {}), "Allow": ", ".join(allowed_methods(request))}
    return _answer(request, WireError(exc.status_code, code, message, headers))


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route answers at this path. Starlette's 405 names only the methods
    of the first route whose path matched, so a path that two routes share (`/v1/batch/{id}`:
    GET a batch, PUT/POST/DELETE an upload) would be told it allows one of them."""
    routes = request.app.router.routes
    return [
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes
        )
    ]


async def _client_disconnect(request: Request, exc: Exception) -> Response:
    return _answer(
        request, WireError(400, ErrorCode.INVALID_REQUEST, "client disconnected mid-request")
    )


def _internal_error(request: Request, exc: Exception) -> Response:
    log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
    return _answer(request, INTERNAL)


def unexpected(exc: Exception) -> WireError:
    """What a client is told about an exception nothing expected: a full disk under any store
    (SQLite's "database or disk is full", PostgreSQL's disk_full; the transaction was rolled
    back, so nothing is half-written) is 507 `insufficient_storage`, anything else 500."""
    if storage_is_full(exc):
        full = out_of_storage()
        return WireError(full.http_status, full.code, full.message)
    return INTERNAL


async def _unexpected(request: Request, exc: Exception) -> Response:
    error = unexpected(exc)
    if error is INTERNAL:
        return _internal_error(request, exc)
    log.error("storage full on %s %s: %s", request.method, request.url.path, exc)
    return _answer(request, error)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(BatchVisionError, _batchvision_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(ClientDisconnect, _client_disconnect)
    app.add_exception_handler(Exception, _unexpected)
