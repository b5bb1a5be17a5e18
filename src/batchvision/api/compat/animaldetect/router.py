"""AnimalDetect `POST /api/v1/batch-detect` and `/api/v1/batch-detect-urban`, served on the
`animals` skill (+ `metadata`), as ../shared/seeds/000 documents them, and the stored response
at `GET /api/v1/batch-detect/{id}`.

Wire rules from the page: `Authorization: Bearer <key>`; multipart/form-data (`images` repeated,
the other fields as form fields) or JSON (`images`: base64 strings, the rest as JSON values);
1-10 images; combined raw image size at most 10 MB; `threshold` 0.01-0.99 (default 0.2);
`latitude`/`longitude` "must be sent together and only have effect when `country` is also
present"; 1 credit per image.

Choices where the page is silent (for the README):
- Errors use batchvision's `{"error": {"code", "message"}}`. Every validation error is 400
  `invalid_request` (the page lists 400 for validation), including what the native API answers
  with 422 or a count-based 413: 0 or 11+ images, a threshold outside 0.01-0.99 or not a number,
  a bad boolean, a latitude or longitude that is not a number or out of range (checked even when
  it is not used), latitude without longitude (or the reverse) when a country is sent, an
  unknown country, a wrong Content-Type. The message names each field and its problem
  (`threshold: Input should be less than or equal to 0.99`). Combined raw image bytes over the
  route's limit is 413 `payload_too_large`, refused from Content-Length or while the body
  arrives.
- Latitude/longitude without `country` have no effect, as the page says, and are no error: the
  batch `info` gets `notes` (an extra list of strings, only when there is something to say)
  saying they were ignored. Half a point without a country is ignored the same way; with a
  country it is 400, as the page says they "must be sent together" and the client meant the
  hint to be used.
- Sizes are MiB: batch-detect 10 MiB (`animaldetect_max_batch_bytes`), batch-detect-urban
  5 MiB (`animaldetect_urban_max_batch_bytes`). JSON bodies are allowed the base64 size of that.
- Form values are strings: booleans `true`/`false`/`1`/`0` (any case), numbers as decimal text.
  JSON takes the same strings or native JSON numbers/booleans; `null` or an empty string means
  "not sent". Unknown fields are ignored (as a drop-in must tolerate client extras); `profile`
  and `model` cannot be set on the wire: the route decides the profile.
- The urban route is the same pipeline with `profile="urban"`: domestic taxa (cattle, dog, cat,
  horse, sheep, pig, goat, chicken) and people are never rolled up by the geofence.
- `filename` is the multipart part's filename; JSON images have none, so it is `null`.
- Annotation `id` is a uuid4 string, unique across responses (stable: GET returns the same).
- `metadata` (only with metadata=true) holds only what the image has: `image_width`,
  `image_height`, `file_size`, and from EXIF `capture_time` (ISO 8601, with the offset when the
  camera wrote one), `camera_make`, `camera_model`, `gps_latitude`, `gps_longitude`,
  `gps_altitude` (metres).
- An image that cannot be read gets `"error": {"code", "message"}` (batchvision codes, e.g.
  `image_decode_failed`), `annotations: []`, no `metadata`, and its `info`; it is not charged.
- `info.processing_time_ms` of an item is its decode time plus the batch's model time (the
  images of a batch run through the model together); `info.total_time_ms` is the wall time of
  the whole batch; `info.total_processed` counts the images that were processed successfully.
- `model_id` is the detector card (`yolox-nano`, or an installed MegaDetector card);
  `model_version` adds `-speciesnet-taxonomy` when labels come from the SpeciesNet taxonomy
  (classify=true). `country_processed` is the CCA3 code the country normalised to, else null.
- Every response is stored for `detect_result_ttl_hours` (24) and served, byte-for-byte the same
  JSON, by `GET /api/v1/batch-detect/{id}` (and the alias `GET /api/v1/batch-detect-urban/{id}`;
  either path serves a result of either route) to the key that made it (admin keys: any).
  Another key's, an unknown or an expired id is 404. Expired rows are purged on the next write
  and by the server's periodic sweep.
- With a `country`, the batch `info` also carries `geofence` ({country, region, applied,
  has_base_rules, note}): the page has no field for "no geofence data installed", and an
  extra field is safe.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from batchvision.accounts.scoping import Principal
from batchvision.api.access import analyze_metered, bearer_principal
from batchvision.api.bodies import parse_body
from batchvision.api.compat.animaldetect.store import DetectResultStore, NewResult
from batchvision.api.compat.animaldetect.wire import BatchFields, JsonBatch
from batchvision.api.openapi import BODY, KEYED, NativeErrorBody, error_responses
from batchvision.api.surface import services
from batchvision.core.db import utcnow
from batchvision.core.errors import BatchVisionError, ErrorCode
from batchvision.core.settings import Settings
from batchvision.core.types import ImageInput, ItemResult, Task, normalized_xywh
from batchvision.intake.body import (
    BodyLimits,
    check_content_length,
    image_from_base64,
    read_json,
    read_multipart,
)
from batchvision.pipeline import Pipeline, PreparedTask
from batchvision.skills.animals import AnimalsParams, AnimalsSkill, Profile

router = APIRouter(tags=["animaldetect"])

Authorized = Annotated[Principal, Depends(bearer_principal)]

MAX_IMAGES = 10
# Room for the form fields and part headers around the images, so the body cap stops an
# oversize upload while it arrives without refusing one that is just under the image limit.
_ENVELOPE_BYTES = 256 * 1024
_EXIF_FIELDS = ("capture_time", "camera_make", "camera_model")


@dataclass(frozen=True)
class Route:
    name: str  # the path segment, also stored with each result
    profile: Profile  # the animals skill's profile

    def max_bytes(self, settings: Settings) -> int:
        if self.profile == "urban":
            return settings.animaldetect_urban_max_batch_bytes
        return settings.animaldetect_max_batch_bytes


WILD = Route("batch-detect", "wild")
URBAN = Route("batch-detect-urban", "urban")


@dataclass
class BatchRequest:
    images: list[ImageInput]
    fields: BatchFields  # the rest of the request, checked for its form; the skill checks params


def _invalid(message: str) -> BatchVisionError:
    return BatchVisionError(ErrorCode.INVALID_REQUEST, message)


# --- reading the request -----------------------------------------------------------------


def body_limits(settings: Settings, max_bytes: int, media_type: str) -> BodyLimits:
    # JSON carries the images as base64: 4 characters for every 3 bytes.
    images = -(-max_bytes // 3) * 4 if media_type == "application/json" else max_bytes
    return BodyLimits(
        max_request_bytes=images + _ENVELOPE_BYTES,
        max_image_bytes=max_bytes,  # one image over it is over the combined limit too
        max_images=MAX_IMAGES,
        max_field_bytes=settings.max_json_field_bytes,
    )


async def _read_multipart(request: Request, limits: BodyLimits) -> BatchRequest:
    content_type = request.headers.get("content-type", "")
    form = await read_multipart(request.stream(), content_type, limits)
    fields = parse_body(BatchFields, {name: form.field(name) for name in form.fields})
    return BatchRequest(form.images, fields)


async def _read_json(request: Request, limits: BodyLimits) -> BatchRequest:
    body = parse_body(JsonBatch, await read_json(request.stream(), limits))
    _check_count(len(body.images))  # before any decoding
    images = [image_from_base64(i, text, limits) for i, text in enumerate(body.images)]
    return BatchRequest(images, body)


def _check_count(count: int) -> None:
    if not 1 <= count <= MAX_IMAGES:
        raise _invalid(f"images must hold 1-{MAX_IMAGES} images, got {count}")


def check_batch_size(images: list[ImageInput], max_bytes: int) -> None:
    """413 when the raw images together pass `max_bytes` (the body cap already stopped any
    upload far past it while it arrived)."""
    too_large = any(
        i.error is not None and i.error.code == ErrorCode.IMAGE_TOO_LARGE for i in images
    )
    total = sum(len(i.data) for i in images if i.data is not None)
    if too_large or total > max_bytes:
        raise BatchVisionError(
            ErrorCode.PAYLOAD_TOO_LARGE,
            f"combined raw image size exceeds the limit of {max_bytes} bytes",
        )


async def read_batch(request: Request, route: Route) -> BatchRequest:
    settings = services(request).pipeline.settings
    max_bytes = route.max_bytes(settings)
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in ("multipart/form-data", "application/json"):
        raise _invalid("Content-Type must be multipart/form-data or application/json")
    limits = body_limits(settings, max_bytes, media_type)
    check_content_length(request.headers, limits)
    if media_type == "application/json":
        batch = await _read_json(request, limits)
    else:
        batch = await _read_multipart(request, limits)
    _check_count(len(batch.images))
    check_batch_size(batch.images, max_bytes)
    return batch


# --- the response --------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelInfo:
    model_id: str
    model_version: str
    threshold: float
    country: str | None


def model_info(task: PreparedTask) -> ModelInfo:
    """What the batch ran with, from the animals skill's own plan (so it matches its output)."""
    skill, params = task.skill, task.params
    if not isinstance(skill, AnimalsSkill) or not isinstance(params, AnimalsParams):
        raise TypeError(f"expected the animals task, got {task.name}")
    header = skill.plan(params).header
    return ModelInfo(header["model"], header["model_version"], params.threshold, params.country)


def _annotation(raw: Mapping[str, Any], width: int, height: int) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "bbox": normalized_xywh(raw["box"], width, height),
        "score": raw["score"],
        "label": raw["label"],
        "taxonomy": raw["taxonomy"],
    }


def wire_metadata(native: Mapping[str, Any]) -> dict[str, Any]:
    """The metadata skill's output under this page's names, only the fields present."""
    found: dict[str, Any] = {
        "image_width": native["width"],
        "image_height": native["height"],
        "file_size": native["file_size"],
    }
    found.update({name: native[name] for name in _EXIF_FIELDS if name in native})
    for name, value in (native.get("gps") or {}).items():
        found[f"gps_{name}"] = value
    return found


def _annotations(result: ItemResult) -> list[dict[str, Any]]:
    """The page's annotations: MegaDetector's normalised [x, y, w, h] from our pixel boxes."""
    animals, image = result.outputs.get("animals"), result.image
    if animals is None or image is None:
        return []
    width, height = image["width"], image["height"]
    return [_annotation(a, width, height) for a in animals["annotations"]]


def result_item(result: ItemResult, info: ModelInfo) -> dict[str, Any]:
    animals = result.outputs.get("animals")
    item: dict[str, Any] = {
        "index": result.index,
        "filename": result.filename,
        "annotations": _annotations(result),
    }
    if animals is None:
        error = result.errors[0] if result.errors else None
        code = error.code.value if error else ErrorCode.PROCESSING_ERROR.value
        item["error"] = {"code": code, "message": error.message if error else "not processed"}
    if "metadata" in result.outputs:  # only there when metadata=true ran the skill
        item["metadata"] = wire_metadata(result.outputs["metadata"])
    item["info"] = {
        "processing_time_ms": round(sum(result.timings_ms.values())),
        "model_version": animals["model_version"] if animals else info.model_version,
        "model_id": animals["model"] if animals else info.model_id,
        "threshold_applied": info.threshold,
    }
    return item


def iso_ms(moment: dt.datetime) -> str:
    """`2026-03-12T09:44:20.954Z`, as the page writes times."""
    utc = moment.astimezone(dt.UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def response_body(
    result_id: str,
    expires_at: dt.datetime,
    items: list[dict[str, Any]],
    info: ModelInfo,
    total_ms: float,
) -> dict[str, Any]:
    return {
        "id": result_id,
        "expires_at": iso_ms(expires_at),
        "results": items,
        "info": {
            "total_processed": sum(1 for item in items if "error" not in item),
            "total_time_ms": round(total_ms),
            "model_version": info.model_version,
            "model_id": info.model_id,
            "country_processed": info.country,
            "threshold_applied": info.threshold,
        },
    }


# --- the routes ----------------------------------------------------------------------------


def _prepare(pipeline: Pipeline, batch: BatchRequest, route: Route) -> list[PreparedTask]:
    tasks = [Task("animals", batch.fields.animals_params(route.profile))]
    if batch.fields.metadata:
        tasks.append(Task("metadata"))
    return pipeline.prepare_tasks(tasks)


def _expiry(settings: Settings) -> tuple[dt.datetime, dt.datetime]:
    # Whole milliseconds, so the stored row and the `expires_at` the client sees are one time.
    now = utcnow()
    expires = now + dt.timedelta(hours=settings.detect_result_ttl_hours)
    return now, expires.replace(microsecond=expires.microsecond // 1000 * 1000)


async def _batch_detect(request: Request, principal: Principal, route: Route) -> JSONResponse:
    batch = await read_batch(request, route)
    pipeline = services(request).pipeline
    tasks = _prepare(pipeline, batch, route)
    info = model_info(tasks[0])
    start = time.perf_counter()
    results = await analyze_metered(request, principal, pipeline, batch.images, tasks)
    total_ms = (time.perf_counter() - start) * 1000.0
    items = [result_item(r, info) for r in results]
    created, expires = _expiry(pipeline.settings)
    result_id = str(uuid.uuid4())
    body = response_body(result_id, expires, items, info, total_ms)
    _add_geofence_note(body, results)
    _add_notes(body, batch.fields.notes())
    stored = NewResult(result_id, route.name, created, expires, body)
    await asyncio.to_thread(_store(request).save, principal, stored)
    return JSONResponse(body)


def _add_geofence_note(body: dict[str, Any], results: list[ItemResult]) -> None:
    """An extra `info.geofence` ({country, applied, has_base_rules, note}) when a country was
    sent, so a client can tell "no geofence data installed" from "nothing was vetoed" (the page
    has no field for it; clients ignore fields they do not know)."""
    if body["info"]["country_processed"] is None:
        return
    for result in results:
        animals = result.outputs.get("animals")
        if animals is not None:
            body["info"]["geofence"] = animals["geofence"]
            return


def _add_notes(body: dict[str, Any], notes: list[str]) -> None:
    """An extra `info.notes` when something sent had no effect (latitude/longitude without
    country): the page ignores them silently, a note tells the client why nothing changed."""
    if notes:
        body["info"]["notes"] = notes


def _store(request: Request) -> DetectResultStore:
    return DetectResultStore(services(request).database)


def _params_doc() -> dict[str, Any]:
    """The request body in OpenAPI, from the wire models (form fields are all text)."""
    form: dict[str, Any] = {
        "images": {"type": "array", "items": {"type": "string", "format": "binary"}},
        **{name: {"type": "string"} for name in BatchFields.model_fields},
    }
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {"schema": {"type": "object", "properties": form}},
                "application/json": {"schema": JsonBatch.model_json_schema()},
            },
        }
    }


_DOC = _params_doc()


# The statuses each route answers besides its success, for the OpenAPI document (every
# validation problem is a 400 here: surface.py).
_DETECT_ERRORS = error_responses(NativeErrorBody, (*KEYED, *BODY, 402, 415, 503, 507))
_RESULT_ERRORS = error_responses(NativeErrorBody, (*KEYED, 404))


@router.post("/api/v1/batch-detect", openapi_extra=_DOC, responses=_DETECT_ERRORS)
async def batch_detect(request: Request, principal: Authorized) -> JSONResponse:
    """1-10 camera-trap images: animal / human / vehicle boxes with SpeciesNet labels."""
    return await _batch_detect(request, principal, WILD)


@router.post("/api/v1/batch-detect-urban", openapi_extra=_DOC, responses=_DETECT_ERRORS)
async def batch_detect_urban(request: Request, principal: Authorized) -> JSONResponse:
    """As batch-detect, for urban, farm or zoo scenes: domestic taxa are never geofenced."""
    return await _batch_detect(request, principal, URBAN)


@router.get("/api/v1/batch-detect/{result_id}", responses=_RESULT_ERRORS)
@router.get("/api/v1/batch-detect-urban/{result_id}", responses=_RESULT_ERRORS)
async def get_result(request: Request, principal: Authorized, result_id: str) -> dict[str, Any]:
    """A stored batch-detect response until its `expires_at`; another key's is not found."""
    return await asyncio.to_thread(_store(request).get, principal, result_id)
