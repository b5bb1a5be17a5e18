"""One error vocabulary for the whole project; each surface maps codes to its wire form.

`ErrorCode` holds every code batchvision speaks: request and per-item codes (an `ItemError`, a
`BatchVisionError`) and the job-level codes a whole job ends with (`JobView.error_code`:
`validation_error`, `limit_exceeded`, `empty_batch`, `timeout`, `processing_failed`,
`insufficient_credits`). There is no second enum for jobs: a job's code is the same kind of value,
and `HTTP_STATUS` gives each one the status a synchronous request failing that way would get.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from enum import StrEnum
from http import HTTPStatus
from typing import Any


class ErrorCode(StrEnum):
    INVALID_REQUEST = "invalid_request"
    INVALID_PARAMETER = "invalid_parameter"
    IMAGE_DECODE_FAILED = "image_decode_failed"
    UNSUPPORTED_FORMAT = "unsupported_format"
    IMAGE_TOO_LARGE = "image_too_large"
    VIDEO_DECODE_FAILED = "video_decode_failed"
    VIDEO_TOO_LARGE = "video_too_large"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    TOO_MANY_IMAGES = "too_many_images"
    FETCH_FAILED = "fetch_failed"
    URL_NOT_ALLOWED = "url_not_allowed"
    UNKNOWN_SKILL = "unknown_skill"
    MODEL_UNAVAILABLE = "model_unavailable"
    PROCESSING_ERROR = "processing_error"
    OVERLOADED = "overloaded"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    INSUFFICIENT_CREDITS = "insufficient_credits"
    RATE_LIMITED = "rate_limited"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    # A request larger than the key's whole per-minute bucket: waiting never helps (not a 429).
    EXCEEDS_RATE_LIMIT = "exceeds_rate_limit"
    # The server's disk is full; the message is generic, the request may succeed later.
    INSUFFICIENT_STORAGE = "insufficient_storage"
    INTERNAL_ERROR = "internal_error"
    # Job-level: how a whole job failed (per-line failures use the codes above). A job's
    # `processing_failed` (the job broke) differs on the wire from a line's `processing_error`.
    VALIDATION_ERROR = "validation_error"
    LIMIT_EXCEEDED = "limit_exceeded"
    EMPTY_BATCH = "empty_batch"
    TIMEOUT = "timeout"
    PROCESSING_FAILED = "processing_failed"


HTTP_STATUS: dict[ErrorCode, HTTPStatus] = {
    ErrorCode.INVALID_REQUEST: HTTPStatus.BAD_REQUEST,
    ErrorCode.INVALID_PARAMETER: HTTPStatus.UNPROCESSABLE_ENTITY,
    ErrorCode.IMAGE_DECODE_FAILED: HTTPStatus.BAD_REQUEST,
    ErrorCode.UNSUPPORTED_FORMAT: HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
    ErrorCode.IMAGE_TOO_LARGE: HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    ErrorCode.VIDEO_DECODE_FAILED: HTTPStatus.BAD_REQUEST,
    ErrorCode.VIDEO_TOO_LARGE: HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    ErrorCode.PAYLOAD_TOO_LARGE: HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    ErrorCode.TOO_MANY_IMAGES: HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    ErrorCode.FETCH_FAILED: HTTPStatus.BAD_REQUEST,
    ErrorCode.URL_NOT_ALLOWED: HTTPStatus.BAD_REQUEST,
    ErrorCode.UNKNOWN_SKILL: HTTPStatus.BAD_REQUEST,
    ErrorCode.MODEL_UNAVAILABLE: HTTPStatus.SERVICE_UNAVAILABLE,
    ErrorCode.PROCESSING_ERROR: HTTPStatus.INTERNAL_SERVER_ERROR,
    ErrorCode.OVERLOADED: HTTPStatus.SERVICE_UNAVAILABLE,
    ErrorCode.UNAUTHORIZED: HTTPStatus.UNAUTHORIZED,
    ErrorCode.FORBIDDEN: HTTPStatus.FORBIDDEN,
    ErrorCode.INSUFFICIENT_CREDITS: HTTPStatus.PAYMENT_REQUIRED,
    ErrorCode.RATE_LIMITED: HTTPStatus.TOO_MANY_REQUESTS,
    ErrorCode.NOT_FOUND: HTTPStatus.NOT_FOUND,
    ErrorCode.METHOD_NOT_ALLOWED: HTTPStatus.METHOD_NOT_ALLOWED,
    ErrorCode.EXCEEDS_RATE_LIMIT: HTTPStatus.UNPROCESSABLE_ENTITY,
    ErrorCode.INSUFFICIENT_STORAGE: HTTPStatus.INSUFFICIENT_STORAGE,
    ErrorCode.INTERNAL_ERROR: HTTPStatus.INTERNAL_SERVER_ERROR,
    ErrorCode.VALIDATION_ERROR: HTTPStatus.BAD_REQUEST,
    ErrorCode.LIMIT_EXCEEDED: HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    ErrorCode.EMPTY_BATCH: HTTPStatus.BAD_REQUEST,
    ErrorCode.TIMEOUT: HTTPStatus.GATEWAY_TIMEOUT,
    ErrorCode.PROCESSING_FAILED: HTTPStatus.INTERNAL_SERVER_ERROR,
}


class BatchVisionError(Exception):
    """An expected failure with a stable code; safe to show its message to clients."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        retry_after_s: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s
        self.headers = dict(headers or {})
        if retry_after_s is not None:
            self.headers["Retry-After"] = str(retry_after_s)

    @property
    def http_status(self) -> HTTPStatus:
        return HTTP_STATUS[self.code]

    def __repr__(self) -> str:
        return f"BatchVisionError({self.code.value!r}, {self.message!r})"


def out_of_storage() -> BatchVisionError:
    """A full disk (blob files or the database): generic, since paths and errno text are the
    server's business, and retryable once an operator has made room."""
    return BatchVisionError(
        ErrorCode.INSUFFICIENT_STORAGE, "the server is out of storage space; try again later"
    )


# Client text quoted back in a message is cut to this many characters: a 1 MB skill name must
# not make a 1 MB error body, and 200 characters still show any real name in full.
ECHO_LIMIT = 200


def echo(text: object, limit: int = ECHO_LIMIT) -> str:
    """Client-sent `text` as it may appear in an error message: at most `limit` characters,
    with how many were left out."""
    value = str(text)
    if len(value) <= limit:
        return value
    return f"{value[:limit]}… ({len(value) - limit} more characters)"


def did_you_mean(words: str | Iterable[str], choices: Iterable[str]) -> str:
    """`" (did you mean 'detect'?)"` when a word is a near miss of one of `choices` (a typo, another
    case), naming the closest choice for each such word, else "". Only known names are quoted
    back, never more of the client's text. At most 3 words are looked at."""
    known = {choice.lower(): choice for choice in choices}
    asked = [words] if isinstance(words, str) else list(words)[:3]
    close = [difflib.get_close_matches(w.strip().lower(), list(known), n=1) for w in asked]
    named = list(dict.fromkeys(f"'{known[match[0]]}'" for match in close if match))
    return f" (did you mean {' or '.join(named)}?)" if named else ""


def model_unavailable(name: str, reason: str = "is not installed") -> BatchVisionError:
    return BatchVisionError(
        ErrorCode.MODEL_UNAVAILABLE,
        f"model '{name}' {reason}; install it with `batchvision models pull {name}`",
    )


def describe_problems(errors: Iterable[Mapping[str, Any]], *, where: str = "") -> str:
    """Validation errors (pydantic's or FastAPI's) as "field.path: message; ..." for clients;
    never the rejected input itself."""
    problems = []
    for error in errors:
        # Locations name client keys (an extra field), so they are echoes too.
        location = ".".join(echo(part) for part in error.get("loc", ())) or where
        # A validator's message may quote the value (an unknown country): bounded as well.
        problems.append(f"{location}: {echo(error.get('msg', 'invalid'), 4 * ECHO_LIMIT)}")
    return "; ".join(problems)


def json_type(value: Any) -> str:
    """The JSON type of a parsed value, for "(got …)" in a field's error message."""
    if value is None:
        return "null"
    if isinstance(value, bool):  # before int: a bool is an int to Python, never to JSON
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"
