"""What the OpenAPI document says about routes that read their own bodies (multipart streams,
JSON read under limits), so /docs can "Try it out" and schemathesis can check them."""

from __future__ import annotations

from collections.abc import Iterable
from http import HTTPStatus
from typing import Any

from pydantic import BaseModel


def request_body(media: str, schema: dict[str, Any], example: Any = None) -> dict[str, Any]:
    """A route's request body for `openapi_extra`, with an example that works as it stands."""
    content: dict[str, Any] = {"schema": schema}
    if example is not None:
        content["example"] = example
    return {"requestBody": {"required": True, "content": {media: content}}}


# Error statuses that most routes share: behind a key (no or a wrong key, the rate limit, and the
# generic 500 every route may answer), and reading a body (malformed, too slow, too large).
KEYED = (401, 429, 500)
BODY = (400, 408, 413)


class ErrorDetail(BaseModel):
    code: str  # a stable `ErrorCode` value
    message: str


class NativeErrorBody(BaseModel):
    """batchvision's own error body (the native API and the surfaces that speak it)."""

    error: ErrorDetail


def error_responses(body: type[BaseModel], statuses: Iterable[int]) -> dict[int | str, Any]:
    """`responses=` for a route that answers these error statuses with `body`."""
    return {
        status: {"model": body, "description": HTTPStatus(status).phrase}
        for status in sorted(set(statuses))
    }


def drop_unanswered_validation(spec: dict[str, Any]) -> None:
    """Remove the 422 `HTTPValidationError` FastAPI adds to every route with parameters: the
    server never sends that body (api/errors.py answers a request validation error in the
    surface's own form, at 400), so documenting it would promise a response that never comes."""
    for item in spec.get("paths", {}).values():
        for operation in item.values():
            unprocessable = operation.get("responses", {}).get("422", {})
            schema = unprocessable.get("content", {}).get("application/json", {}).get("schema", {})
            if schema.get("$ref", "").endswith("/HTTPValidationError"):
                del operation["responses"]["422"]
    schemas = spec.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)


def streamed(
    media: str, description: str, schema: dict[str, Any] | None = None
) -> dict[int | str, Any]:
    """`responses=` for a route whose success is a stream of `media` (lines, or server-sent
    events whose data each match `schema`)."""
    content = {media: {"schema": schema or {"type": "string"}}}
    return {200: {"description": description, "content": content}}


def inlined_schema(model: type[BaseModel], *, by_alias: bool = True) -> dict[str, Any]:
    """`model`'s JSON schema with its nested models written in place: a `$defs` reference
    would not resolve inside an OpenAPI document."""
    schema = model.model_json_schema(by_alias=by_alias)
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, list):
            return [resolve(item) for item in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            return resolve(defs[node["$ref"].rsplit("/", 1)[-1]])
        return {key: resolve(value) for key, value in node.items()}

    resolved: dict[str, Any] = resolve(schema)
    return resolved


# An 8×8 white PNG: an image every skill decodes, small enough for an example body.
TINY_PNG_BASE64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAIAAABLbSncAAAAFUlEQVR42mP8//8/"
    "AzbAxIADDE4JAFbUAw3/dxQWAAAAAElFTkSuQmCC"
)
