"""What the client raises: the server's refusals as `BatchVisionAPIError`, everything else the
client itself refuses as `BatchVisionClientError`. Transport failures (no connection, a
timeout) stay httpx's own `httpx.HTTPError`, so callers can retry them as they retry any
network call."""

from __future__ import annotations

from typing import Any

import httpx


class BatchVisionClientError(Exception):
    """A request the client will not make or a reply it cannot use."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BatchVisionAPIError(BatchVisionClientError):
    """The server answered with an error: its HTTP status and the body's `{code, message}`.
    `code` is batchvision's error vocabulary (`unauthorized`, `not_found`, ...), or
    `http_<status>` when the body was not batchvision's error form (a proxy's page, say)."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.headers = headers or {}

    def __str__(self) -> str:
        return f"{self.code}: {self.message} (HTTP {self.status})"

    @classmethod
    def of(cls, reply: httpx.Response) -> BatchVisionAPIError:
        """The error a reply carries; the reply must have been read."""
        headers = dict(reply.headers)
        try:
            error: Any = reply.json()["error"]
            return cls(reply.status_code, str(error["code"]), str(error["message"]), headers)
        except (ValueError, KeyError, TypeError):
            reason = reply.reason_phrase or "unexpected reply"
            return cls(reply.status_code, f"http_{reply.status_code}", reason, headers)


def checked_object(reply: httpx.Response) -> dict[str, Any]:
    """The JSON object of a successful reply; an error reply raises its BatchVisionAPIError."""
    if reply.is_error:
        raise BatchVisionAPIError.of(reply)
    try:
        body = reply.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise BatchVisionClientError(
            f"the server at {reply.request.url} did not answer with a JSON object"
        )
    return body
