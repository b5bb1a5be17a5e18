"""Raku Sight `POST /api/v1/inference/predict/batch[/v2]`, `…/predict/stream[/v2]` and
`…/assets/signed-url` (../shared/seeds/003 and issue 13), on the `detect` skill (`is_yolo`, the
local COCO detector) and `query` (`is_llm`, the configured vision-language backend).

Choices where the page is silent (documented in the README):
- The key is the `api_key` form field (v1) or body field (v2, signed-url); `Authorization:
  Bearer <key>` is accepted when the field is absent. Neither is 400 `invalid_request`.
- Errors are `{"detail": {"message", "code"}}` (errors.py): 400 for every bad parameter, 401
  key, 402 credits, 413 limits, 429 rate, 500 with a generic message.
- Limits: 1-50 files per request (51+ is 413 `too_many_images`); a file of more than
  `raku_max_file_bytes` (20 MiB) in a v1 upload is 413 `payload_too_large`, refused while it
  arrives; the body at most `raku_max_request_bytes` (100 MiB; v2 bodies 1 MiB), 413 past it,
  from Content-Length or while the bytes arrive. A v2 URL whose body passes the file limit is
  that file's `image_too_large` error.
- `metadata` must have one entry per file (else 400); each entry a JSON object whose
  `is_yolo` / `is_llm` are JSON booleans (a missing flag is false; other keys are ignored).
- v2 `filename` is echoed; without one it is the last segment of the URL's path (or null).
- Per-file failures (no flag set, `is_llm` without a query, unreadable image, URL refused or
  not fetched, backend not configured or failing) are that file's `error` `{code, message}`
  beside whatever did run (a file with both flags whose backend failed keeps its `yolo`); the
  request answers 200. `code` is 0.
- Streams (`application/x-ndjson`) write `{"status": "processing", "index", "filename"}` when a
  file's work starts and `{"status": "done", "index", "filename", "result"}` (or `"error"`, with
  `error` and the partial `result`) when it ends, in the order files finish.
- Charged: each file that reached the models (`credits_per_image`), each vision-language answer
  (`credits_per_vlm_call`); nothing for files that failed before inference, for backend
  failures, or for files a disconnected stream never finished.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Request, Security
from fastapi.responses import JSONResponse, Response, StreamingResponse

from batchvision.accounts.scoping import Principal
from batchvision.api.access import BEARER, authorize, bearer_token, field_token, metered_request
from batchvision.api.bodies import parse_body
from batchvision.api.compat.raku import wire
from batchvision.api.compat.raku.assets import ASSET_ROUTE, ROOT, Assets, media_type
from batchvision.api.compat.raku.errors import RakuErrorBody
from batchvision.api.compat.raku.predict import Emit, Event, Outcome, Prediction, RakuFile
from batchvision.api.job_routes import base_url
from batchvision.api.openapi import error_responses, inlined_schema, request_body, streamed
from batchvision.api.surface import Services, services
from batchvision.core.errors import BatchVisionError, ErrorCode
from batchvision.core.types import ImageInput
from batchvision.intake.body import BodyLimits, check_content_length, read_json, read_multipart

log = logging.getLogger(__name__)
router = APIRouter(tags=["raku"])

PREFIX = "/api/v1/inference"
NDJSON = "application/x-ndjson"
URL_BODY_BYTES = 1024 * 1024  # 50 URLs of 8 KiB with their fields fit well inside
SMALL_BODY_BYTES = 64 * 1024
_running: set[asyncio.Task[None]] = set()  # stream work, kept referenced until it ends


@dataclass
class RakuRequest:
    principal: Principal
    query: str | None
    files: list[RakuFile]


def _invalid(message: str) -> BatchVisionError:
    return BatchVisionError(ErrorCode.INVALID_REQUEST, message)


def assets_of(found: Services) -> Assets:
    hours = found.settings.raku_asset_retention_hours
    return Assets(found.jobs.blobs, found.jobs.signer, dt.timedelta(hours=hours))


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _limits(request: Request, max_request_bytes: int | None = None) -> BodyLimits:
    settings = services(request).settings
    limits = BodyLimits(
        max_request_bytes=max_request_bytes or settings.raku_max_request_bytes,
        max_image_bytes=settings.raku_max_file_bytes,
        max_images=wire.MAX_FILES,
        max_field_bytes=settings.max_json_field_bytes,
    )
    check_content_length(request.headers, limits)
    return limits


async def _authorize(request: Request, fields: Mapping[str, object]) -> Principal:
    secret = field_token(fields) or bearer_token(request.headers)
    if secret is None:
        raise _invalid("api_key is required")
    return await authorize(request, secret)


async def _json_object(request: Request, limit: int) -> dict[str, Any]:
    if _media_type(request) not in ("application/json", ""):
        raise _invalid("Content-Type must be application/json")
    body = await read_json(request.stream(), _limits(request, limit))
    if not isinstance(body, dict):
        raise _invalid("request body must be a JSON object")
    return body


# --- reading the two request forms ---------------------------------------------------------


def _check_file_sizes(images: list[ImageInput], limit: int) -> None:
    for image in images:
        if image.error is not None and image.error.code is ErrorCode.IMAGE_TOO_LARGE:
            raise BatchVisionError(
                ErrorCode.PAYLOAD_TOO_LARGE,
                f"file {image.index} ({image.filename}) exceeds the limit of {limit} bytes",
            )


async def read_upload(request: Request) -> RakuRequest:
    """v1: multipart `api_key`, `query`, `files` (repeated), `metadata` (one per file)."""
    if _media_type(request) != "multipart/form-data":
        raise _invalid("Content-Type must be multipart/form-data")
    limits = _limits(request)
    content_type = request.headers.get("content-type", "")
    try:
        form = await read_multipart(request.stream(), content_type, limits, frozenset({"files"}))
    except BatchVisionError as exc:
        if exc.code is ErrorCode.TOO_MANY_IMAGES:
            raise wire.too_many_files(wire.MAX_FILES + 1) from None
        raise
    principal = await _authorize(request, form.fields)
    if not form.images:
        raise _invalid("files: at least one file is required")
    _check_file_sizes(form.images, limits.max_image_bytes)
    flags = wire.parse_metadata(form.fields.get("metadata", []), len(form.images))
    files = [
        RakuFile(image.index, image.filename, flag, data=image.data, error=image.error)
        for image, flag in zip(form.images, flags, strict=True)
    ]
    return RakuRequest(principal, wire.parse_query(form.field("query")), files)


def _url_name(url: str) -> str | None:
    try:
        return urlsplit(url).path.rsplit("/", 1)[-1] or None
    except ValueError:
        return None


async def read_urls(request: Request) -> RakuRequest:
    """v2: JSON `{api_key, query, data: [{image_url, filename, is_yolo, is_llm}]}`."""
    body = await _json_object(request, URL_BODY_BYTES)
    principal = await _authorize(request, body)
    batch = wire.parse_url_batch(body)
    files = [
        RakuFile(i, item.filename or _url_name(item.image_url), item, url=item.image_url)
        for i, item in enumerate(batch.data)
    ]
    return RakuRequest(principal, wire.parse_query(batch.query), files)


# --- running -------------------------------------------------------------------------------


async def _prediction(request: Request, raku: RakuRequest) -> Prediction:
    found = services(request)
    folder = await asyncio.to_thread(assets_of(found).new_folder, raku.principal)
    return Prediction(found.pipeline, folder, raku.query)


async def _metered(
    request: Request,
    raku: RakuRequest,
    prediction: Prediction,
    emit: Emit,
    started: Callable[[], None],
) -> list[Outcome]:
    """Credits reserved for every file (and each vision-language call asked for), then handed
    back for what did not run; `started` is told once the reservation stands."""
    calls = prediction.vlm_calls(raku.files)
    files = raku.files
    async with metered_request(request, raku.principal, len(files), vlm_calls=calls) as meter:
        started()
        outcomes = await prediction.run(files, emit)
        meter.refund_images(sum(1 for o in outcomes if not o.inferred))
        unanswered = calls - sum(1 for o in outcomes if o.answered)
        meter.refund_credits(unanswered * services(request).settings.credits_per_vlm_call)
    return outcomes


async def _batch(request: Request, raku: RakuRequest) -> JSONResponse:
    prediction = await _prediction(request, raku)
    outcomes = await _metered(request, raku, prediction, _ignore, lambda: None)
    return JSONResponse({"result": [o.entry for o in outcomes], "code": 0})


def _ignore(event: Event) -> None:
    pass


async def _stream(request: Request, raku: RakuRequest) -> StreamingResponse:
    """The work runs in its own task, so that a client going away stops the files (and what
    they cost) without cancelling the metering that settles what did run."""
    prediction = await _prediction(request, raku)
    queue: asyncio.Queue[Event | None] = asyncio.Queue()
    started: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def work() -> None:
        try:
            await _metered(
                request, raku, prediction, queue.put_nowait, lambda: started.set_result(None)
            )
        finally:
            queue.put_nowait(None)

    task = asyncio.create_task(work())
    _running.add(task)
    task.add_done_callback(_work_ended)
    await asyncio.wait([started, task], return_when=asyncio.FIRST_COMPLETED)
    if not started.done():
        task.result()  # the reservation failed (402, 429): a plain error response
    return StreamingResponse(_lines(queue, prediction), media_type=NDJSON)


def _work_ended(task: asyncio.Task[None]) -> None:
    _running.discard(task)
    exc = None if task.cancelled() else task.exception()
    if exc is not None and not isinstance(exc, BatchVisionError):
        log.error("stream work failed", exc_info=exc)


async def _lines(queue: asyncio.Queue[Event | None], prediction: Prediction) -> AsyncIterator[str]:
    try:
        while (event := await queue.get()) is not None:
            yield json.dumps(event, separators=(",", ":")) + "\n"
    finally:  # the client went away, or every file is done
        prediction.stop()


# --- routes --------------------------------------------------------------------------------


_TEXT = {"type": "string"}
_UPLOAD_DOC = request_body(
    "multipart/form-data",
    {
        "type": "object",
        "required": ["files", "metadata"],
        "properties": {
            "api_key": {"type": "string", "description": "the API key (or send a Bearer header)"},
            "query": _TEXT,
            "files": {"type": "array", "items": {"type": "string", "format": "binary"}},
            "metadata": {"type": "array", "items": _TEXT, "description": '{"is_yolo", "is_llm"}'},
        },
    },
)


# The key is a body field here, which OpenAPI cannot call a credential: the document names the
# Bearer header the routes also take, so "Authorize" works for them.
_KEYED = [Security(BEARER)]
# The statuses each route answers besides its success (errors.py keeps these, any other client
# error is a 400), for the OpenAPI document.
_PREDICT_ERRORS = error_responses(RakuErrorBody, (400, 401, 402, 413, 429, 500, 503, 507))
_SIGN_ERRORS = error_responses(RakuErrorBody, (400, 401, 404, 413, 429, 500))
_ASSET_ERRORS = error_responses(RakuErrorBody, (403, 404, 500))
_EVENTS = streamed(NDJSON, "a line per event (`processing`, `done`, `error`) as files finish")
_URLS_DOC = request_body(
    "application/json",
    inlined_schema(wire.UrlBatch),
    {
        "query": "What is in the picture?",
        "data": [
            {
                "image_url": "https://example.com/street.jpg",
                "filename": "street.jpg",
                "is_yolo": True,
            }
        ],
    },
)
_SIGN_DOC = request_body("application/json", inlined_schema(wire.SignedUrlRequest))


@router.post(
    f"{PREFIX}/predict/batch",
    dependencies=_KEYED,
    responses=_PREDICT_ERRORS,
    openapi_extra=_UPLOAD_DOC,
)
async def predict_batch(request: Request) -> JSONResponse:
    """v1: uploaded files; one JSON object once every file is done."""
    return await _batch(request, await read_upload(request))


@router.post(
    f"{PREFIX}/predict/batch/v2",
    dependencies=_KEYED,
    responses=_PREDICT_ERRORS,
    openapi_extra=_URLS_DOC,
)
async def predict_batch_v2(request: Request) -> JSONResponse:
    """v2: image URLs in a JSON body; one JSON object once every file is done."""
    return await _batch(request, await read_urls(request))


@router.post(
    f"{PREFIX}/predict/stream",
    dependencies=_KEYED,
    responses={**_PREDICT_ERRORS, **_EVENTS},
    openapi_extra=_UPLOAD_DOC,
)
async def predict_stream(request: Request) -> StreamingResponse:
    """v1 as a stream: a line per event as work progresses."""
    return await _stream(request, await read_upload(request))


@router.post(
    f"{PREFIX}/predict/stream/v2",
    dependencies=_KEYED,
    responses={**_PREDICT_ERRORS, **_EVENTS},
    openapi_extra=_URLS_DOC,
)
async def predict_stream_v2(request: Request) -> StreamingResponse:
    """v2 as a stream."""
    return await _stream(request, await read_urls(request))


@router.post(
    f"{PREFIX}/assets/signed-url",
    dependencies=_KEYED,
    responses=_SIGN_ERRORS,
    openapi_extra=_SIGN_DOC,
)
async def signed_url(request: Request) -> dict[str, Any]:
    """A time-limited link to one of the caller's result assets; needs no key to download."""
    body = await _json_object(request, SMALL_BODY_BYTES)
    principal = await _authorize(request, body)
    asked = parse_body(wire.SignedUrlRequest, body)
    assets = assets_of(services(request))
    await asyncio.to_thread(assets.check_owned, principal, asked.object_path)
    path = assets.signed_path(asked.object_path, asked.expires_in, dt.datetime.now(dt.UTC))
    return {
        "object_path": asked.object_path,
        "signed_url": base_url(request) + path,
        "expires_in": asked.expires_in,
    }


# Every object path starts `results/`, and the route says so: a bare `{object_path:path}` also
# matched `assets/signed-url`, so GET there reached this route and a 405 there listed GET.
@router.get(ASSET_ROUTE + ROOT + "{object_path:path}", responses=_ASSET_ERRORS)
async def asset(request: Request, object_path: str) -> Response:
    """A result asset by signed link (no key: the signature is the credential); `object_path`
    is the rest of the path after `results/`."""
    assets = assets_of(services(request))
    query = request.query_params
    path = assets.verified_path(request.url.path, query.get("expires"), query.get("signature"))
    data = await asyncio.to_thread(assets.read, path)
    return Response(data, media_type=media_type(path))
