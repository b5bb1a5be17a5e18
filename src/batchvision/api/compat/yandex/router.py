"""Yandex Vision `POST /vision/v1/batchAnalyze`, served on the `ocr` skill.

Wire rules (../shared/seeds/004): 1-8 analyzeSpecs, each with base64 `content` (at most 1,048,576
characters, JPEG or PNG, at most 20 megapixels) and 1-8 features; TEXT_DETECTION takes 1-8
`languageCodes` of at most 3 characters; `folderId` at most 50 characters. int64 fields (width,
height, x, y) are JSON strings. Errors are google.rpc Status objects `{code, message, details}`.
The body is read as a proto3 JSON parser reads it (`wire.py`): either field spelling, enum names
or numbers.

Choices where the page is silent (documented in the README):
- Structural violations (spec/feature/language counts, field types and lengths, malformed JSON,
  a field given in both spellings) fail the whole request with HTTP 400 and INVALID_ARGUMENT, as
  protobuf validation would.
- The body must be JSON: a Content-Type other than `application/json` (or `*+json`) is HTTP 415
  with INVALID_ARGUMENT; no Content-Type at all is read as JSON, as a gRPC gateway does.
- Problems with one image (bad base64, over 1,048,576 characters, not JPEG/PNG, undecodable, over
  20 MP) become that spec's `error`; the other specs still succeed. A spec that sends a
  `signature` instead of `content` gets UNIMPLEMENTED there.
- A feature type other than TEXT_DETECTION errors on that feature only: UNIMPLEMENTED for the
  other types the Vision API has (CLASSIFICATION, FACE_DETECTION, IMAGE_COPY_SEARCH),
  INVALID_ARGUMENT for TYPE_UNSPECIFIED and any name or number the proto does not have.
- A TEXT_DETECTION feature without `textDetectionConfig` uses the `ocr` skill's default, which
  detects the language as `languageCodes: ["*"]` does.
- `languageCodes: ["*"]` detects the language (Yandex's documented meaning; the `ocr` skill's
  `["*"]`); `*` beside other codes is INVALID_ARGUMENT for that feature.
- Each word lists one language, the one it was read in, with the skill's measured
  `language_confidence`: the word's confidence times the share of its letters in that language's
  script (a word without letters: its line's language, by the share of the line's words in it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request, Security
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader

from batchvision.api.access import BEARER, authorize, metered_request, scheme_token
from batchvision.api.compat.yandex import wire
from batchvision.api.compat.yandex.errors import (
    RpcCode,
    RpcStatusBody,
    item_status,
    rpc_code,
    rpc_status,
)
from batchvision.api.compat.yandex.wire import MAX_CONTENT_CHARS, MAX_SPECS, FeatureType
from batchvision.api.openapi import TINY_PNG_BASE64, error_responses, inlined_schema, request_body
from batchvision.api.surface import services
from batchvision.core.errors import BatchVisionError, ErrorCode
from batchvision.core.types import ImageInput, ItemError, ItemResult, Task
from batchvision.intake.body import BodyLimits, check_content_length, image_from_base64, read_json

router = APIRouter(tags=["yandex"])

MAX_PIXELS = 20_000_000
# Base64 of 1 MiB plus the JSON around 8 of them; bodies past this are refused while reading.
MAX_BODY_BYTES = MAX_SPECS * (MAX_CONTENT_CHARS + 64 * 1024)
# Feature types the Vision API has offered; we implement only OCR.
OTHER_VISION_FEATURES = frozenset(
    {FeatureType.CLASSIFICATION, FeatureType.FACE_DETECTION, FeatureType.IMAGE_COPY_SEARCH}
)
_MAGIC = {b"\xff\xd8\xff": "JPEG", b"\x89PNG\r\n\x1a\n": "PNG"}
_SHOWN_TYPE_CHARS = 40


@dataclass
class PlannedFeature:
    languages: list[str] | None  # None: the skill's default (detect them)
    error: dict[str, Any] | None = None


@dataclass
class PlannedSpec:
    index: int
    features: list[PlannedFeature]
    image: ImageInput
    error: dict[str, Any] | None = None
    outputs: dict[int, dict[str, Any]] = field(default_factory=dict)


def _type_problem(feature: wire.Feature) -> dict[str, Any] | None:
    """Why this feature is not served, as its google.rpc error; None for TEXT_DETECTION."""
    known = feature.known_type
    if known is FeatureType.TEXT_DETECTION:
        return None
    if known in OTHER_VISION_FEATURES:
        return rpc_status(RpcCode.UNIMPLEMENTED, f"feature type {known.name} is not supported")
    shown = str(feature.type)[:_SHOWN_TYPE_CHARS]
    if known is FeatureType.TYPE_UNSPECIFIED:
        return rpc_status(RpcCode.INVALID_ARGUMENT, f"feature type is {shown}; set one")
    return rpc_status(RpcCode.INVALID_ARGUMENT, f"unknown feature type {shown!r}")


def _plan_feature(feature: wire.Feature) -> PlannedFeature:
    config = feature.text_detection_config
    languages = [code.lower() for code in config.language_codes] if config else None
    return PlannedFeature(languages, _type_problem(feature))


def _image(index: int, content: str, limits: BodyLimits) -> ImageInput:
    if len(content) > MAX_CONTENT_CHARS:
        message = f"content is {len(content)} characters; at most {MAX_CONTENT_CHARS} are allowed"
        return ImageInput(index, error=ItemError(ErrorCode.IMAGE_TOO_LARGE, message))
    item = image_from_base64(index, content, limits)
    if item.data is not None and not any(item.data.startswith(m) for m in _MAGIC):
        item.data = None
        item.error = ItemError(ErrorCode.UNSUPPORTED_FORMAT, "only JPEG and PNG are supported")
    return item


def _plan_spec(index: int, spec: wire.AnalyzeSpec, limits: BodyLimits) -> PlannedSpec:
    features = [_plan_feature(f) for f in spec.features]
    if spec.content is None:  # then the wire model holds a signature
        message = "signature sources are not supported; send the image as content"
        unsupported = rpc_status(RpcCode.UNIMPLEMENTED, message)
        return PlannedSpec(index, features, ImageInput(index), unsupported)
    image = _image(index, spec.content, limits)
    error = item_status(image.error) if image.error else None
    return PlannedSpec(index, features, image, error)


def parse_body(body: Any, limits: BodyLimits) -> list[PlannedSpec]:
    request = wire.parse_request(body)
    return [_plan_spec(i, spec, limits) for i, spec in enumerate(request.analyze_specs)]


def _vertices(polygon: list[list[float]]) -> dict[str, Any]:
    return {"vertices": [{"x": str(round(x)), "y": str(round(y))} for x, y in polygon]}


def _word(word: dict[str, Any]) -> dict[str, Any]:
    languages = (
        [{"languageCode": word["language"], "confidence": word["language_confidence"]}]
        if word.get("language")
        else []
    )
    return {
        "boundingBox": _vertices(word["polygon"]),
        "text": word["text"],
        "confidence": word["confidence"],
        "languages": languages,
    }


def text_detection(ocr: dict[str, Any]) -> dict[str, Any]:
    """The native `ocr` payload in Yandex's shape (int64 values as strings)."""
    pages = []
    for page in ocr["pages"]:
        blocks = [
            {
                "boundingBox": _vertices(block["polygon"]),
                "lines": [
                    {
                        "boundingBox": _vertices(line["polygon"]),
                        "words": [_word(w) for w in line["words"]],
                        "confidence": line["confidence"],
                    }
                    for line in block["lines"]
                ],
            }
            for block in page["blocks"]
        ]
        pages.append({"width": str(page["width"]), "height": str(page["height"]), "blocks": blocks})
    return {"pages": pages}


async def _run_ocr(request: Request, specs: list[PlannedSpec]) -> int:
    """OCR every (spec, feature) that needs it, grouped by language set; returns how many specs
    failed before inference (refunded)."""
    pipeline = services(request).pipeline
    groups: dict[tuple[str, ...] | None, list[tuple[PlannedSpec, int]]] = {}
    for spec in specs:
        if spec.error is None:
            for j, feature in enumerate(spec.features):
                if feature.error is None:
                    key = tuple(feature.languages) if feature.languages is not None else None
                    groups.setdefault(key, []).append((spec, j))
    failed_intake: set[int] = set()
    for languages, members in groups.items():
        params = {} if languages is None else {"languages": list(languages)}
        try:
            tasks = pipeline.prepare_tasks([Task("ocr", params)])
        except BatchVisionError as exc:  # an unsupported language fails only these features
            for spec, j in members:
                spec.features[j].error = rpc_status(rpc_code(exc.code), exc.message)
            continue
        inputs = [spec.image for spec, _ in members]
        results = await pipeline.analyze(inputs, tasks, max_pixels=MAX_PIXELS)
        for (spec, j), result in zip(members, results, strict=True):
            _apply(spec, j, result, failed_intake)
    return len(failed_intake | {s.index for s in specs if s.error is not None})


def _apply(spec: PlannedSpec, feature: int, result: ItemResult, failed_intake: set[int]) -> None:
    if result.image is None:
        spec.error = item_status(result.errors[0])
        failed_intake.add(spec.index)
    elif "ocr" in result.outputs:
        spec.outputs[feature] = {"textDetection": text_detection(result.outputs["ocr"])}
    else:
        spec.features[feature].error = item_status(result.errors[0])


def _spec_result(spec: PlannedSpec) -> dict[str, Any]:
    if spec.error is not None:
        return {"error": spec.error}
    feature_results = []
    for j, feature in enumerate(spec.features):
        if feature.error is not None:
            feature_results.append({"error": feature.error})
        else:
            feature_results.append(spec.outputs[j])
    return {"results": feature_results}


def check_json_body(headers: Mapping[str, str]) -> None:
    """The body must be JSON; a client that names no Content-Type is taken to mean JSON."""
    media_type = headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type and media_type != "application/json" and not media_type.endswith("+json"):
        raise BatchVisionError(
            ErrorCode.UNSUPPORTED_FORMAT, "Content-Type must be application/json"
        )


def yandex_token(headers: Mapping[str, str]) -> str | None:
    """Yandex Cloud clients send `Authorization: Api-Key <key>` (or an IAM-style Bearer)."""
    return scheme_token(headers, "Api-Key", "Bearer")


async def _batch_analyze(request: Request) -> JSONResponse:
    principal = await authorize(request, yandex_token(request.headers))
    settings = services(request).pipeline.settings
    limits = BodyLimits(
        max_request_bytes=min(settings.max_request_bytes, MAX_BODY_BYTES),
        max_image_bytes=MAX_CONTENT_CHARS,
        max_images=MAX_SPECS,
        max_field_bytes=settings.max_json_field_bytes,
    )
    check_json_body(request.headers)
    check_content_length(request.headers, limits)
    specs = parse_body(await read_json(request.stream(), limits), limits)
    async with metered_request(request, principal, len(specs)) as meter:
        meter.refund_images(await _run_ocr(request, specs))
    return JSONResponse({"results": [_spec_result(spec) for spec in specs]})


# For the OpenAPI document (api/access.py, BEARER): the check is `yandex_token`. Swagger UI
# sends an apiKey scheme's value as typed, so the value is `Api-Key <key>`.
API_KEY = APIKeyHeader(
    name="Authorization",
    scheme_name="yandexApiKey",
    auto_error=False,
    description="Yandex Vision (`/vision/v1/batchAnalyze`): `Api-Key <key>` as the value "
    "(an IAM-style `Bearer <key>` works too: the `bearer` scheme).",
)
_BODY_DOC = request_body(
    "application/json",
    inlined_schema(wire.BatchAnalyzeRequest),
    {
        "folderId": "b1g0example",
        "analyzeSpecs": [
            {
                "content": TINY_PNG_BASE64,
                "features": [
                    {
                        "type": "TEXT_DETECTION",
                        "textDetectionConfig": {"languageCodes": ["*"]},
                    }
                ],
            }
        ],
    },
)


@router.post(
    "/vision/v1/batchAnalyze",
    dependencies=[Security(API_KEY), Security(BEARER)],
    responses=error_responses(RpcStatusBody, (400, 401, 402, 408, 413, 415, 429, 500, 503, 507)),
    openapi_extra=_BODY_DOC,
)
async def batch_analyze(request: Request) -> JSONResponse:
    """Yandex Vision batchAnalyze (TEXT_DETECTION)."""
    return await _batch_analyze(request)
