"""One place that turns exceptions into JSON error bodies; 5xx bodies never carry details."""

from __future__ import annotations

import logging
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from batchvision.core.errors import BatchVisionError, ErrorCode, describe_problems

log = logging.getLogger(__name__)

_STATUS_CODES: dict[int, ErrorCode] = {
    HTTPStatus.NOT_FOUND: ErrorCode.NOT_FOUND,
    HTTPStatus.METHOD_NOT_ALLOWED: ErrorCode.METHOD_NOT_ALLOWED,
    HTTPStatus.REQUEST_ENTITY_TOO_LARGE: ErrorCode.PAYLOAD_TOO_LARGE,
    HTTPStatus.UNSUPPORTED_MEDIA_TYPE: ErrorCode.UNSUPPORTED_FORMAT,
    HTTPStatus.SERVICE_UNAVAILABLE: ErrorCode.OVERLOADED,
}


def error_response(
    status: int, code: ErrorCode, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code.value, "message": message}}, status_code=status, headers=headers
    )


async def _batchvision_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, BatchVisionError)
    headers = exc.headers or None
    status = exc.http_status
    if status >= 500 and exc.code not in (ErrorCode.MODEL_UNAVAILABLE, ErrorCode.OVERLOADED):
        return _internal_error(request, exc)
    return error_response(status, exc.code, exc.message, headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    message = describe_problems(exc.errors()) or "invalid request"
    return error_response(400, ErrorCode.INVALID_REQUEST, message)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _STATUS_CODES.get(exc.status_code, ErrorCode.INVALID_REQUEST)
    if exc.status_code >= 500:
        return _internal_error(request, exc)
    message = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    return error_response(exc.status_code, code, message, dict(exc.headers or {}))


async def _client_disconnect(request: Request, exc: Exception) -> JSONResponse:
    return error_response(400, ErrorCode.INVALID_REQUEST, "client disconnected mid-request")


def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, ErrorCode.INTERNAL_ERROR, "internal server error")


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    return _internal_error(request, exc)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(BatchVisionError, _batchvision_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(ClientDisconnect, _client_disconnect)
    app.add_exception_handler(Exception, _unexpected)
