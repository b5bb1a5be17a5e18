"""Yandex Vision's error language: google.rpc Status objects `{code, message, details}`, on every
`/vision/` path — errors raised by the route, request validation, a wrong Content-Type and
unmatched paths or methods alike. The HTTP status is the problem's own (415, 413, 405, …); the
`code` is the google.rpc one (`RPC_CODES`)."""

from __future__ import annotations

from enum import IntEnum
from typing import Any

from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from batchvision.api.surface import WireError
from batchvision.core.errors import HTTP_STATUS, ErrorCode
from batchvision.core.types import ItemError


class RpcCode(IntEnum):
    """google.rpc.Code values used here."""

    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    UNAUTHENTICATED = 16


# Every ErrorCode, named (tests check none is missing): a code a client could have fixed is
# INVALID_ARGUMENT, as Yandex's request validation answers; the rest say what went wrong.
RPC_CODES: dict[ErrorCode, RpcCode] = {
    ErrorCode.INVALID_REQUEST: RpcCode.INVALID_ARGUMENT,
    ErrorCode.INVALID_PARAMETER: RpcCode.INVALID_ARGUMENT,
    ErrorCode.IMAGE_DECODE_FAILED: RpcCode.INVALID_ARGUMENT,
    ErrorCode.UNSUPPORTED_FORMAT: RpcCode.INVALID_ARGUMENT,
    ErrorCode.IMAGE_TOO_LARGE: RpcCode.INVALID_ARGUMENT,
    ErrorCode.VIDEO_DECODE_FAILED: RpcCode.INVALID_ARGUMENT,  # batchAnalyze takes no video
    ErrorCode.VIDEO_TOO_LARGE: RpcCode.INVALID_ARGUMENT,
    ErrorCode.PAYLOAD_TOO_LARGE: RpcCode.INVALID_ARGUMENT,
    ErrorCode.TOO_MANY_IMAGES: RpcCode.INVALID_ARGUMENT,
    ErrorCode.FETCH_FAILED: RpcCode.INVALID_ARGUMENT,
    ErrorCode.URL_NOT_ALLOWED: RpcCode.INVALID_ARGUMENT,
    ErrorCode.UNKNOWN_SKILL: RpcCode.INVALID_ARGUMENT,
    ErrorCode.UNAUTHORIZED: RpcCode.UNAUTHENTICATED,
    ErrorCode.FORBIDDEN: RpcCode.PERMISSION_DENIED,
    ErrorCode.INSUFFICIENT_CREDITS: RpcCode.RESOURCE_EXHAUSTED,
    ErrorCode.RATE_LIMITED: RpcCode.RESOURCE_EXHAUSTED,
    ErrorCode.EXCEEDS_RATE_LIMIT: RpcCode.INVALID_ARGUMENT,
    ErrorCode.INSUFFICIENT_STORAGE: RpcCode.RESOURCE_EXHAUSTED,
    ErrorCode.NOT_FOUND: RpcCode.NOT_FOUND,
    ErrorCode.METHOD_NOT_ALLOWED: RpcCode.UNIMPLEMENTED,
    ErrorCode.MODEL_UNAVAILABLE: RpcCode.UNAVAILABLE,
    ErrorCode.OVERLOADED: RpcCode.UNAVAILABLE,
    ErrorCode.PROCESSING_ERROR: RpcCode.INTERNAL,
    ErrorCode.INTERNAL_ERROR: RpcCode.INTERNAL,
    # Job-level codes: batchAnalyze runs no jobs, named so that the table stays complete.
    ErrorCode.VALIDATION_ERROR: RpcCode.INVALID_ARGUMENT,
    ErrorCode.LIMIT_EXCEEDED: RpcCode.RESOURCE_EXHAUSTED,
    ErrorCode.EMPTY_BATCH: RpcCode.INVALID_ARGUMENT,
    ErrorCode.TIMEOUT: RpcCode.DEADLINE_EXCEEDED,
    ErrorCode.PROCESSING_FAILED: RpcCode.INTERNAL,
}


def rpc_code(code: ErrorCode) -> RpcCode:
    found = RPC_CODES.get(code)
    if found is None:  # a code added to ErrorCode later, until it is named above
        return RpcCode.INTERNAL if HTTP_STATUS[code] >= 500 else RpcCode.INVALID_ARGUMENT
    return found


class RpcStatusBody(BaseModel):
    """A google.rpc Status, for the OpenAPI document."""

    code: int
    message: str
    details: list[Any]


def rpc_status(code: RpcCode, message: str) -> dict[str, Any]:
    return {"code": int(code), "message": message, "details": []}


def item_status(error: ItemError) -> dict[str, Any]:
    return rpc_status(rpc_code(error.code), error.message)


class YandexErrors:
    """The Yandex surface's `ErrorTable`."""

    def render(self, error: WireError) -> Response:
        body = rpc_status(rpc_code(error.code), error.message)
        return JSONResponse(body, status_code=error.status, headers=error.headers)
