"""Yandex Vision `POST /vision/v1/batchAnalyze`, served on the `ocr` skill.

Wire rules (../shared/seeds/004): 1-8 analyzeSpecs, each with base64 `content` (at most 1,048,576
characters, JPEG or PNG, at most 20 megapixels) and 1-8 features; TEXT_DETECTION takes 1-8
`languageCodes` of at most 3 characters; `folderId` at most 50 characters. int64 fields (width,
height, x, y) are JSON strings. Errors are google.rpc Status objects `{code, message, details}`.

Choices where the page is silent (documented in the README):
- Structural violations (spec/feature/language counts, field types and lengths, malformed JSON)
  fail the whole request with HTTP 400 and INVALID_ARGUMENT, as protobuf validation would.
- Problems with one image (bad base64, over 1,048,576 characters, not JPEG/PNG, undecodable, over
  20 MP) become that spec's `error`; the other specs still succeed.
- A feature type other than TEXT_DETECTION errors on that feature only: UNIMPLEMENTED for the
  other types the Vision API has had, INVALID_ARGUMENT for anything else.
- A TEXT_DETECTION feature without `textDetectionConfig` uses the default language set.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from batchvision.api.access import authorize, metered_request, scheme_token
from batchvision.api.compat.yandex.errors import RpcCode, item_status, rpc_code, rpc_status
from batchvision.api.surface import services
from batchvision.core.errors import BatchVisionError, ErrorCode
from batchvision.core.types import ImageInput, ItemError, ItemResult, Task
from batchvision.intake.body import BodyLimits, check_content_length, image_from_base64, read_json

router = APIRouter(tags=["yandex"])

MAX_SPECS = 8
MAX_FEATURES = 8
MAX_LANGUAGES = 8
MAX_LANGUAGE_CODE = 3
MAX_CONTENT_CHARS = 1_048_576
MAX_FOLDER_ID = 50
MAX_PIXELS = 20_000_000
# Base64 of 1 MiB plus the JSON around 8 of them; bodies past this are refused while reading.
MAX_BODY_BYTES = MAX_SPECS * (MAX_CONTENT_CHARS + 64 * 1024)
TEXT_DETECTION = "TEXT_DETECTION"
# Feature types the Vision API has offered; we implement only OCR.
KNOWN_FEATURES = {"CLASSIFICATION", "FACE_DETECTION", "IMAGE_COPY_SEARCH"}
_MAGIC = {b"\xff\xd8\xff": "JPEG", b"\x89PNG\r\n\x1a\n": "PNG"}


def _invalid(message: str) -> BatchVisionError:
    return BatchVisionError(ErrorCode.INVALID_REQUEST, message)


@dataclass
class Feature:
    type: str
    languages: list[str] | None  # None: the default language set
    error: dict[str, Any] | None = None


@dataclass
class Spec:
    index: int
    features: list[Feature]
    image: ImageInput
    error: dict[str, Any] | None = None
    outputs: dict[int, dict[str, Any]] = field(default_factory=dict)


def _list_field(container: dict[str, Any], name: str, where: str, low: int, high: int) -> list[Any]:
    value = container.get(name)
    if not isinstance(value, list):
        raise _invalid(f"{where}{name} must be a list")
    if not low <= len(value) <= high:
        raise _invalid(f"{where}{name} must have {low}-{high} elements, got {len(value)}")
    return value


def _parse_feature(raw: Any, where: str) -> Feature:
    if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
        raise _invalid(f"{where}type is required")
    feature = Feature(type=raw["type"], languages=None)
    config = raw.get("textDetectionConfig")
    if config is not None:
        if not isinstance(config, dict):
            raise _invalid(f"{where}textDetectionConfig must be an object")
        codes = _list_field(
            config, "languageCodes", f"{where}textDetectionConfig.", 1, MAX_LANGUAGES
        )
        for code in codes:
            if not isinstance(code, str) or not 1 <= len(code) <= MAX_LANGUAGE_CODE:
                raise _invalid(f"{where}textDetectionConfig.languageCodes: '{code}' is not a code")
        feature.languages = [c.lower() for c in codes]
    if feature.type != TEXT_DETECTION:
        code = RpcCode.UNIMPLEMENTED if feature.type in KNOWN_FEATURES else RpcCode.INVALID_ARGUMENT
        feature.error = rpc_status(code, f"feature type {feature.type} is not supported")
    return feature


def _parse_image(index: int, content: Any, limits: BodyLimits) -> ImageInput:
    if not isinstance(content, str):
        raise _invalid(f"analyzeSpecs[{index}].content must be a base64 string")
    if len(content) > MAX_CONTENT_CHARS:
        message = f"content is {len(content)} characters; at most {MAX_CONTENT_CHARS} are allowed"
        return ImageInput(index, error=ItemError(ErrorCode.IMAGE_TOO_LARGE, message))
    item = image_from_base64(index, content, limits)
    if item.data is not None and not any(item.data.startswith(m) for m in _MAGIC):
        item.data = None
        item.error = ItemError(ErrorCode.UNSUPPORTED_FORMAT, "only JPEG and PNG are supported")
    return item


def _parse_spec(index: int, raw: Any, limits: BodyLimits) -> Spec:
    where = f"analyzeSpecs[{index}]."
    if not isinstance(raw, dict):
        raise _invalid(f"analyzeSpecs[{index}] must be an object")
    features = [
        _parse_feature(f, f"{where}features[{j}].")
        for j, f in enumerate(_list_field(raw, "features", where, 1, MAX_FEATURES))
    ]
    if "content" not in raw:
        raise _invalid(f"{where}content is required")
    image = _parse_image(index, raw["content"], limits)
    error = item_status(image.error) if image.error else None
    return Spec(index, features, image, error)


def parse_body(body: Any, limits: BodyLimits) -> list[Spec]:
    if not isinstance(body, dict):
        raise _invalid("request body must be a JSON object")
    folder = body.get("folderId")
    if folder is not None and (not isinstance(folder, str) or len(folder) > MAX_FOLDER_ID):
        raise _invalid(f"folderId must be a string of at most {MAX_FOLDER_ID} characters")
    specs = _list_field(body, "analyzeSpecs", "", 1, MAX_SPECS)
    return [_parse_spec(i, raw, limits) for i, raw in enumerate(specs)]


def _vertices(polygon: list[list[float]]) -> dict[str, Any]:
    return {"vertices": [{"x": str(round(x)), "y": str(round(y))} for x, y in polygon]}


def _word(word: dict[str, Any]) -> dict[str, Any]:
    languages = (
        [{"languageCode": word["language"], "confidence": 1.0}] if word.get("language") else []
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


async def _run_ocr(request: Request, specs: list[Spec]) -> int:
    """OCR every (spec, feature) that needs it, grouped by language set; returns how many specs
    failed before inference (refunded)."""
    pipeline = services(request).pipeline
    groups: dict[tuple[str, ...] | None, list[tuple[Spec, int]]] = {}
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


def _apply(spec: Spec, feature: int, result: ItemResult, failed_intake: set[int]) -> None:
    if result.image is None:
        spec.error = item_status(result.errors[0])
        failed_intake.add(spec.index)
    elif "ocr" in result.outputs:
        spec.outputs[feature] = {"textDetection": text_detection(result.outputs["ocr"])}
    else:
        spec.features[feature].error = item_status(result.errors[0])


def _spec_result(spec: Spec) -> dict[str, Any]:
    if spec.error is not None:
        return {"error": spec.error}
    feature_results = []
    for j, feature in enumerate(spec.features):
        if feature.error is not None:
            feature_results.append({"error": feature.error})
        else:
            feature_results.append(spec.outputs[j])
    return {"results": feature_results}


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
    check_content_length(request.headers, limits)
    specs = parse_body(await read_json(request.stream(), limits), limits)
    async with metered_request(request, principal, len(specs)) as meter:
        meter.refund_images(await _run_ocr(request, specs))
    return JSONResponse({"results": [_spec_result(spec) for spec in specs]})


@router.post("/vision/v1/batchAnalyze")
async def batch_analyze(request: Request) -> JSONResponse:
    """Yandex Vision batchAnalyze (TEXT_DETECTION)."""
    return await _batch_analyze(request)
