"""Yandex Vision's error language: google.rpc Status objects `{code, message, details}`, at the
HTTP status of our code (as Yandex's API gateway does), on every `/vision/` path — errors raised
by the route, request validation and unmatched paths or methods alike."""

from __future__ import annotations

from enum import IntEnum
from typing import Any

from fastapi.responses import JSONResponse, Response

from batchvision.api.surface import WireError
from batchvision.core.errors import ErrorCode
from batchvision.core.types import ItemError


class RpcCode(IntEnum):
    """google.rpc.Code values used here."""

    INVALID_ARGUMENT = 3
    NOT_FOUND = 5
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    UNAUTHENTICATED = 16


_RPC_CODES: dict[ErrorCode, RpcCode] = {
    ErrorCode.UNAUTHORIZED: RpcCode.UNAUTHENTICATED,
    ErrorCode.FORBIDDEN: RpcCode.PERMISSION_DENIED,
    ErrorCode.INSUFFICIENT_CREDITS: RpcCode.RESOURCE_EXHAUSTED,
    ErrorCode.RATE_LIMITED: RpcCode.RESOURCE_EXHAUSTED,
    ErrorCode.NOT_FOUND: RpcCode.NOT_FOUND,
    ErrorCode.METHOD_NOT_ALLOWED: RpcCode.UNIMPLEMENTED,
    ErrorCode.MODEL_UNAVAILABLE: RpcCode.UNAVAILABLE,
    ErrorCode.OVERLOADED: RpcCode.UNAVAILABLE,
    ErrorCode.PROCESSING_ERROR: RpcCode.INTERNAL,
    ErrorCode.INTERNAL_ERROR: RpcCode.INTERNAL,
}


def rpc_code(code: ErrorCode) -> RpcCode:
    return _RPC_CODES.get(code, RpcCode.INVALID_ARGUMENT)


def rpc_status(code: RpcCode, message: str) -> dict[str, Any]:
    return {"code": int(code), "message": message, "details": []}


def item_status(error: ItemError) -> dict[str, Any]:
    return rpc_status(rpc_code(error.code), error.message)


class YandexErrors:
    """The Yandex surface's `ErrorTable`."""

    def render(self, error: WireError) -> Response:
        body = rpc_status(rpc_code(error.code), error.message)
        return JSONResponse(body, status_code=error.status, headers=error.headers)
