"""Request bodies as pydantic models, for every surface: a parsed JSON value (read by
`intake.body` with its limits enforced while the bytes arrived) checked against a model, and
refused with a stable code and "field.path: reason" for each problem."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from batchvision.core.errors import BatchVisionError, ErrorCode, describe_problems

Model = TypeVar("Model", bound=BaseModel)


def refusal(
    exc: ValidationError, code: ErrorCode = ErrorCode.INVALID_REQUEST, *, where: str = "request"
) -> BatchVisionError:
    """The client error for `exc`; `where` names problems that belong to no one field."""
    return BatchVisionError(code, describe_problems(exc.errors(), where=where))


def json_object(body: Any, code: ErrorCode = ErrorCode.INVALID_REQUEST) -> dict[str, Any]:
    """`body` when it is a JSON object; said plainly otherwise (pydantic's own message would name
    the model class)."""
    if not isinstance(body, dict):
        raise BatchVisionError(code, "request body must be a JSON object")
    return body


def parse_body(model: type[Model], body: Any, code: ErrorCode = ErrorCode.INVALID_REQUEST) -> Model:
    """`body` (parsed JSON or form values) as `model`, or a `code` error."""
    try:
        return model.model_validate(json_object(body, code))
    except ValidationError as exc:
        raise refusal(exc, code) from None
