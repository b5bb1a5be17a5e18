"""The native API: `/v1/analyze`, `/v1/skills`, `/v1/models`, `/healthz`, `/readyz`."""

from __future__ import annotations

import json
import time
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from batchvision.accounts.scoping import Principal
from batchvision.api.access import analyze_metered, native_principal
from batchvision.api.native.outputs import native_outputs
from batchvision.api.surface import services
from batchvision.core.errors import BatchVisionError, ErrorCode
from batchvision.core.types import ImageInput, ItemError, ItemResult, Task
from batchvision.intake.body import (
    BodyLimits,
    check_content_length,
    image_from_base64,
    read_json,
    read_multipart,
    too_many_images,
)
from batchvision.pipeline import PreparedTask
from batchvision.skills import SKILL_TYPES

router = APIRouter()

Authorized = Annotated[Principal, Depends(native_principal)]

_MAX_ID_LENGTH = 256
_ANALYZE_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "images": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                        },
                        "tasks": {
                            "type": "string",
                            "description": "JSON task list or comma-separated skill names",
                        },
                    },
                    "required": ["images"],
                }
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "images": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "data": {"type": "string", "description": "base64 or data URI"},
                                    "url": {"type": "string", "format": "uri"},
                                    "id": {"type": "string"},
                                },
                            },
                        },
                        "tasks": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "skill": {"type": "string"},
                                    "params": {"type": "object"},
                                },
                                "required": ["skill"],
                            },
                        },
                    },
                    "required": ["images"],
                }
            },
        },
    }
}


def _invalid(message: str) -> BatchVisionError:
    return BatchVisionError(ErrorCode.INVALID_REQUEST, message)


def parse_tasks(raw: Any) -> list[Task]:
    """Tasks as `[{skill, params}]`, `["detect", ...]`, or the string "detect,metadata"."""
    if raw is None:
        return [Task("detect")]
    if isinstance(raw, str):
        text = raw.strip()
        if text.startswith("["):
            try:
                raw = json.loads(text)
            except ValueError:
                raise _invalid("tasks is not valid JSON") from None
        else:
            return [Task(name.strip()) for name in text.split(",") if name.strip()]
    if not isinstance(raw, list):
        raise _invalid("tasks must be a list")
    return [_parse_task(entry) for entry in raw]


def _parse_task(entry: Any) -> Task:
    if isinstance(entry, str):
        return Task(entry)
    if not isinstance(entry, dict) or not isinstance(entry.get("skill"), str):
        raise _invalid("each task needs a 'skill' name")
    params = entry.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise BatchVisionError(ErrorCode.INVALID_PARAMETER, "task params must be an object")
    return Task(entry["skill"], params)


def _client_id(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise _invalid("image id must be a string or an integer")
    text = str(value)
    if len(text) > _MAX_ID_LENGTH:
        raise _invalid(f"image id is longer than {_MAX_ID_LENGTH} characters")
    return text


def _refused(index: int, message: str, client_id: str | None = None) -> ImageInput:
    return ImageInput(
        index, client_id=client_id, error=ItemError(ErrorCode.INVALID_REQUEST, message)
    )


def _json_image(index: int, entry: Any, limits: BodyLimits) -> ImageInput:
    """One entry of the JSON `images` list: a base64 string or `{data | url, id?, filename?}`.
    A malformed entry fails only itself."""
    if isinstance(entry, str):
        return image_from_base64(index, entry, limits)
    if not isinstance(entry, dict):
        return _refused(index, "image must be an object")
    client_id = _client_id(entry.get("id"))
    data, url = entry.get("data"), entry.get("url")
    if (data is None) == (url is None):
        return _refused(index, "image needs exactly one of 'data' or 'url'", client_id)
    if data is not None and not isinstance(data, str):
        return _refused(index, "'data' must be a string", client_id)
    if url is not None and not isinstance(url, str):
        return _refused(index, "'url' must be a string", client_id)
    if isinstance(data, str):
        item = image_from_base64(index, data, limits, client_id=client_id)
    else:
        item = ImageInput(index, client_id=client_id, url=url)
    filename = entry.get("filename")
    item.filename = filename if isinstance(filename, str) else None
    return item


async def read_analyze_request(
    request: Request, limits: BodyLimits
) -> tuple[list[ImageInput], list[Task]]:
    check_content_length(request.headers, limits)
    content_type = request.headers.get("content-type", "")
    media_type = content_type.split(";")[0].strip().lower()
    if media_type == "multipart/form-data":
        form = await read_multipart(request.stream(), content_type, limits)
        return form.images, parse_tasks(form.field("tasks"))
    if media_type == "application/json":
        body = await read_json(request.stream(), limits)
        if not isinstance(body, dict):
            raise _invalid("request body must be a JSON object")
        images = body.get("images")
        if not isinstance(images, list):
            raise _invalid("'images' must be a list")
        if len(images) > limits.max_images:
            raise too_many_images(limits.max_images)
        inputs = [_json_image(i, entry, limits) for i, entry in enumerate(images)]
        return inputs, parse_tasks(body.get("tasks"))
    raise BatchVisionError(
        ErrorCode.UNSUPPORTED_FORMAT, "Content-Type must be multipart/form-data or application/json"
    )


def _status(result: ItemResult) -> str:
    if not result.errors:
        return "ok"
    return "partial" if result.outputs else "error"


def result_to_dict(result: ItemResult) -> dict[str, Any]:
    return {
        "index": result.index,
        "id": result.client_id,
        "filename": result.filename,
        "status": _status(result),
        "image": result.image,
        "outputs": native_outputs(result),
        "errors": [error.to_dict() for error in result.errors],
        "timings_ms": result.timings_ms,
    }


def _tasks_to_dicts(tasks: list[PreparedTask]) -> list[dict[str, Any]]:
    return [{"skill": t.name, "params": t.params.model_dump(mode="json")} for t in tasks]


@router.post("/v1/analyze", openapi_extra=_ANALYZE_DOC, tags=["native"])
async def analyze(request: Request, principal: Authorized) -> JSONResponse:
    """Run skills over a batch of images; per-image results come back in request order."""
    start = time.perf_counter()
    pipeline = services(request).pipeline
    inputs, raw_tasks = await read_analyze_request(
        request, BodyLimits.from_settings(pipeline.settings)
    )
    if not inputs:
        raise _invalid("at least one image is required")
    tasks = pipeline.prepare_tasks(raw_tasks)
    results = await analyze_metered(request, principal, pipeline, inputs, tasks)
    failed = sum(1 for r in results if _status(r) == "error")
    return JSONResponse(
        {
            "id": getattr(request.state, "request_id", None) or uuid.uuid4().hex,
            "tasks": _tasks_to_dicts(tasks),
            "results": [result_to_dict(r) for r in results],
            "summary": {
                "images": len(results),
                "succeeded": len(results) - failed,
                "failed": failed,
            },
            "timings_ms": {"total": round((time.perf_counter() - start) * 1000.0, 2)},
        }
    )


@router.get("/v1/skills", tags=["native"])
async def list_skills(principal: Authorized) -> dict[str, Any]:
    return {"skills": [skill.describe() for skill in SKILL_TYPES.values()]}


@router.get("/v1/models", tags=["native"])
async def list_models(request: Request, principal: Authorized) -> dict[str, Any]:
    registry = services(request).pipeline.registry
    return {"models": [status.to_dict() for status in registry.statuses()]}


@router.get("/healthz", tags=["ops"])
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", tags=["ops"])
async def readyz(request: Request) -> JSONResponse:
    pipeline = services(request).pipeline
    saturated = pipeline.engine.in_flight >= pipeline.settings.max_queued_images
    body = {
        "status": "busy" if saturated else "ready",
        "in_flight_images": pipeline.engine.in_flight,
        "loaded_models": pipeline.registry.loaded_names(),
    }
    return JSONResponse(body, status_code=503 if saturated else 200)
