"""Raku Sight's error language: FastAPI's `{"detail": {"message", "code"}}` on every status and
every `/api/v1/inference` path (its clients read `error.detail.message`).

The page documents 200, 400 (bad parameters) and 500. Statuses a client must tell apart keep
their own number: 401 (key), 402 (credits), 403 (a bad signed link), 404, 405, 413 (limits),
429 (rate), 503 (overloaded, with Retry-After) and 507; every other client error (the native
API's 415 and 422) is 400. `code` is batchvision's stable `ErrorCode` value.
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from batchvision.api.openapi import ErrorDetail
from batchvision.api.surface import WireError
from batchvision.core.types import ItemError

KEPT_CLIENT_STATUSES = frozenset({401, 402, 403, 404, 405, 413, 429})


class RakuErrorBody(BaseModel):
    """`{"detail": {"message", "code"}}`, for the OpenAPI document."""

    detail: ErrorDetail


def wire_status(status: int) -> int:
    """The status a Raku client sees for batchvision's `status`."""
    if status >= 500 or status in KEPT_CLIENT_STATUSES:
        return status
    return 400


def detail_body(code: str, message: str) -> dict[str, Any]:
    return {"detail": {"message": message, "code": code}}


def item_error(error: ItemError) -> dict[str, str]:
    """A per-file failure, as the result entry's `error`."""
    return {"code": error.code.value, "message": error.message}


class RakuErrors:
    """The Raku Sight surface's `ErrorTable`."""

    def render(self, error: WireError) -> Response:
        body = detail_body(error.code.value, error.message)
        return JSONResponse(body, status_code=wire_status(error.status), headers=error.headers)
