"""BitMind's enterprise image routes (../shared/seeds/001 and issue 14), on the `synthetic`
skill: `POST /batch_image`, `POST /image`, `GET /health`.

Choices where the page is silent (documented in the README):
- `confidence` is the skill's `ai_probability` (the probability that the image is AI-generated,
  provenance evidence included), `isAI` its `is_ai`; `processingTime` is the image's own decode
  and scoring time and `total_time` the whole request's, both in seconds (3 decimals).
- `/batch_image`: multipart `images` (or `images[]`), 1-50 files; more than 50 is 400
  `too_many_images`, none is 400 `invalid_request`. A file that is not JPEG, PNG or WebP (by
  its bytes), cannot be decoded or is over `max_image_bytes` is that entry's failure,
  `{isAI: null, confidence: null, processingTime, batch_position, error, message}`, and the
  request still answers 200. `batch_count` counts every entry; `request_id` is `batch_img_`
  and the request's X-Request-ID.
- `/image`: the body is the image; its Content-Type must be image/jpeg (or image/jpg),
  image/png or image/webp, else 400 `unsupported_format`; bytes that are not one of the three
  formats are 400 `unsupported_format`, an undecodable image 400 `image_decode_failed`, a body
  over `max_image_bytes` 413 `payload_too_large`.
- Charged like every surface: each image that reached the model (`credits_per_image`).
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from batchvision.accounts.scoping import Principal
from batchvision.api.access import analyze_metered
from batchvision.api.compat.bitmind.auth import SECURED, bitmind_principal
from batchvision.api.compat.bitmind.errors import ANALYSIS_STATUSES, BitmindErrorBody
from batchvision.api.openapi import error_responses, request_body
from batchvision.api.surface import services
from batchvision.core.errors import BatchVisionError, ErrorCode
from batchvision.core.types import ImageInput, ItemError, ItemResult, Task
from batchvision.intake.body import BodyLimits, check_content_length, read_capped, read_multipart
from batchvision.skills.synthetic import DEFAULT_SYNTHETIC_MODEL

router = APIRouter(tags=["bitmind"])
ERRORS = error_responses(BitmindErrorBody, ANALYSIS_STATUSES)

MAX_BATCH_IMAGES = 50
IMAGE_FIELDS = frozenset({"images", "images[]"})
IMAGE_TYPES = frozenset({"image/jpeg", "image/jpg", "image/png", "image/webp"})


def _invalid(message: str) -> BatchVisionError:
    return BatchVisionError(ErrorCode.INVALID_REQUEST, message)


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _seconds(start: float) -> float:
    return round(time.perf_counter() - start, 3)


def image_format(data: bytes) -> str | None:
    """JPEG, PNG or WebP by the file's first bytes; None for anything else."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def _checked(image: ImageInput) -> ImageInput:
    """`image`, failed with unsupported_format when its bytes are none of BitMind's formats."""
    if image.data is not None and image_format(image.data) is None:
        image.data = None
        image.error = ItemError(ErrorCode.UNSUPPORTED_FORMAT, "only JPEG, PNG and WebP images")
    return image


async def _synthetic(
    request: Request, principal: Principal, images: list[ImageInput]
) -> list[ItemResult]:
    pipeline = services(request).pipeline
    tasks = pipeline.prepare_tasks([Task("synthetic")])
    return await analyze_metered(request, principal, pipeline, images, tasks)


def _processing_time(result: ItemResult) -> float:
    return round(sum(result.timings_ms.values()) / 1000.0, 3)


def verdict(result: ItemResult) -> dict[str, Any]:
    """`{isAI, confidence, processingTime}` of one scored image (KeyError when it failed)."""
    output = result.outputs["synthetic"]
    return {
        "isAI": output["is_ai"],
        "confidence": output["ai_probability"],
        "processingTime": _processing_time(result),
    }


def batch_entry(result: ItemResult) -> dict[str, Any]:
    if "synthetic" in result.outputs:
        return {**verdict(result), "batch_position": result.index}
    error = result.errors[0]
    return {
        "isAI": None,
        "confidence": None,
        "processingTime": _processing_time(result),
        "batch_position": result.index,
        "error": error.code.value,
        "message": error.message,
    }


def _limits(request: Request, max_images: int, max_request_bytes: int | None = None) -> BodyLimits:
    settings = services(request).settings
    limits = BodyLimits(
        max_request_bytes=max_request_bytes or settings.max_request_bytes,
        max_image_bytes=settings.max_image_bytes,
        max_images=max_images,
        max_field_bytes=settings.max_json_field_bytes,
    )
    check_content_length(request.headers, limits)
    return limits


_BINARY = {"type": "string", "format": "binary"}
# The bodies for the OpenAPI document (the routes read them as they stream in).
_BATCH_DOC = request_body(
    "multipart/form-data",
    {
        "type": "object",
        "required": ["images"],
        "properties": {"images": {"type": "array", "items": _BINARY, "maxItems": MAX_BATCH_IMAGES}},
    },
)
_IMAGE_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            media: {"schema": _BINARY} for media in ("image/jpeg", "image/png", "image/webp")
        },
    }
}


async def _batch_images(request: Request) -> list[ImageInput]:
    if _media_type(request) != "multipart/form-data":
        raise _invalid("Content-Type must be multipart/form-data with 'images' files")
    settings = services(request).settings
    limits = _limits(request, min(MAX_BATCH_IMAGES, settings.max_images_per_request))
    content_type = request.headers.get("content-type", "")
    form = await read_multipart(request.stream(), content_type, limits, IMAGE_FIELDS)
    if not form.images:
        raise _invalid("images: at least one image file is required")
    return [_checked(image) for image in form.images]


@router.post("/batch_image", dependencies=SECURED, responses=ERRORS, openapi_extra=_BATCH_DOC)
async def batch_image(request: Request) -> JSONResponse:
    """Up to 50 images (multipart `images`): is each AI-generated?"""
    start = time.perf_counter()
    principal = await bitmind_principal(request)
    results = await _synthetic(request, principal, await _batch_images(request))
    body = {
        "batch_results": [batch_entry(result) for result in results],
        "batch_count": len(results),
        "total_time": _seconds(start),
        "request_id": f"batch_img_{request.state.request_id}",
    }
    return JSONResponse(body)


async def _body_image(request: Request) -> ImageInput:
    if _media_type(request) not in IMAGE_TYPES:
        raise BatchVisionError(
            ErrorCode.UNSUPPORTED_FORMAT,
            "Content-Type must be image/jpeg, image/png or image/webp; the body is the image",
        )
    limit = services(request).settings.max_image_bytes
    _limits(request, 1, limit)  # a declared oversize body is refused before it is read
    data = await read_capped(request.stream(), limit)
    if image_format(data) is None:
        raise BatchVisionError(ErrorCode.UNSUPPORTED_FORMAT, "only JPEG, PNG and WebP images")
    return ImageInput(index=0, data=data)


@router.post("/image", dependencies=SECURED, responses=ERRORS, openapi_extra=_IMAGE_DOC)
async def image(request: Request) -> JSONResponse:
    """One image, the request body itself: is it AI-generated?"""
    principal = await bitmind_principal(request)
    [result] = await _synthetic(request, principal, [await _body_image(request)])
    if "synthetic" not in result.outputs:
        error = result.errors[0]
        raise BatchVisionError(error.code, error.message)
    return JSONResponse(verdict(result))


_HEALTH_RESPONSES: dict[int | str, Any] = {
    503: {"description": "`unhealthy`: the synthetic model is not installed (the message says)"},
    **error_responses(BitmindErrorBody, (500,)),
}


@router.get("/health", responses=_HEALTH_RESPONSES)
async def health(request: Request) -> JSONResponse:
    """200 `healthy` when the synthetic model is installed; 503 `unhealthy` naming why not."""
    model = DEFAULT_SYNTHETIC_MODEL
    try:
        services(request).pipeline.registry.require(model)
    except BatchVisionError as exc:
        body = {"status": "unhealthy", "model": model, "message": exc.message}
        return JSONResponse(body, status_code=503)
    return JSONResponse({"status": "healthy", "model": model})
