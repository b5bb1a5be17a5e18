"""What the OpenAPI document says about routes that read their own bodies (multipart streams,
JSON read under limits), so /docs can "Try it out" and schemathesis can check them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


def request_body(media: str, schema: dict[str, Any], example: Any = None) -> dict[str, Any]:
    """A route's request body for `openapi_extra`, with an example that works as it stands."""
    content: dict[str, Any] = {"schema": schema}
    if example is not None:
        content["example"] = example
    return {"requestBody": {"required": True, "content": {media: content}}}


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
