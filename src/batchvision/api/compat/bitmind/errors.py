"""BitMind's error language: `{"error": "<code>", "message": "<text>"}` on every BitMind path.

The page documents only 200s; the issue names 400 (invalid input), 401, 403, 413 and 429. Those
keep their number, and so do 402 (credits), 404, 405 and every 5xx (503 with Retry-After);
every other client error (the native API's 415 and 422, and 413 `too_many_images`: the issue
says more than 50 images is a 400) is 400. `error` is batchvision's stable `ErrorCode` value, a
machine-readable word as in OAuth 2.0's error bodies (RFC 6749 §5.2), which the token route
answers with."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from batchvision.api.surface import WireError
from batchvision.core.errors import ErrorCode

KEPT_CLIENT_STATUSES = frozenset({401, 402, 403, 404, 405, 413, 429})
ALWAYS_400 = frozenset({ErrorCode.TOO_MANY_IMAGES})


class BitmindErrorBody(BaseModel):
    """`{"error": "<code>", "message": "<text>"}`, for the OpenAPI document."""

    error: str
    message: str


# The statuses a BitMind analysis route answers besides its success, for the OpenAPI document.
ANALYSIS_STATUSES = (400, 401, 402, 403, 413, 429, 500, 503, 507)


def wire_status(code: ErrorCode, status: int) -> int:
    """The status a BitMind client sees for batchvision's `status`."""
    if code in ALWAYS_400:
        return 400
    if status >= 500 or status in KEPT_CLIENT_STATUSES:
        return status
    return 400


def error_body(code: ErrorCode, message: str) -> dict[str, Any]:
    return {"error": code.value, "message": message}


class BitmindErrors:
    """The BitMind surface's `ErrorTable`."""

    def render(self, error: WireError) -> Response:
        status = wire_status(error.code, error.status)
        body = error_body(error.code, error.message)
        return JSONResponse(body, status_code=status, headers=error.headers)
