"""Moondream's real-time API: `POST /v1/caption`, `/v1/query`, `/v1/detect`, `/v1/point`, as
Moondream's official Python client calls them (`md.vl(endpoint="http://HOST:8080/v1",
api_key=KEY)`), with the key in `X-Moondream-Auth`.

Each request is one image through the shared pipeline: the rate limit, credits
(`credits_per_image`, plus `credits_per_vlm_call` when a vision-language backend answers) and
refunds of `/v1/analyze`, and its routing: detect / point for a class of the local detector run
there, any other phrase on the vision-language backend. Choices where Moondream's docs are
silent:

- `image_url` is a `data:` URL with base64 (what the client sends) or an http(s) URL, fetched by
  the SSRF-safe intake; anything else is 400 `invalid_request`, as is a missing field.
- Unknown keys are ignored: at the top level (`model`, `spatial_refs`) and in `settings`, whose
  known keys keep the batch lines' rules; detect and point read no settings.
- detect / point: a phrase the batch lines read as a COCO class ("people", "a car": the
  surface's synonyms and plurals) runs on the local detector as that class.
- `reasoning` (query) is false unless sent (the client sends it only when true); when the backend
  gives reasoning it comes back as Moondream's `{"text", "grounding": []}` (no backend reports
  grounding). A streamed query carries the answer only.
- Boxes and points are fractions of the image, clamped to 0..1.
- `stream: true` (caption, query) answers `text/event-stream`, each chunk forwarded as the
  backend produces it: `data: {"chunk": "…", "completed": false}`, then
  `data: {"chunk": "", "completed": true}`. An error before the first chunk is an ordinary JSON
  error; one after it (the backend cut the stream) ends the stream with a last event
  `data: {"chunk": "", "completed": true, "error": {"code", "message"}}`: the status line is
  long gone, and the client's reader stops at `completed`.
- Errors are `{"error": {"code", "message"}}`. A vision-language backend that failed or answered
  something unreadable is 502 `processing_error` with the reason.
- Credits as on `/v1/analyze`: the image's once it decoded (all of them back when it never
  did), `credits_per_vlm_call` only when the backend answered. A stream that ends in an error
  hands the call's back; one whose client hung up mid-answer is billed in full.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Literal, TypeVar

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr

from batchvision.accounts.scoping import Principal
from batchvision.accounts.service import Meter
from batchvision.api.access import analyze_metered, metered_request
from batchvision.api.bodies import parse_body
from batchvision.api.compat.moondream.lines import (
    MAX_OBJECT_CHARS,
    GenerationSettings,
    NonBlank,
    coco_class_for,
)
from batchvision.api.compat.moondream.router import Authorized
from batchvision.api.openapi import (
    BODY,
    KEYED,
    TINY_PNG_BASE64,
    NativeErrorBody,
    error_responses,
    inlined_schema,
    request_body,
    streamed,
)
from batchvision.api.surface import NativeErrors, WireError, services
from batchvision.core.errors import BatchVisionError, ErrorCode
from batchvision.core.types import DecodedImage, ImageInput, ItemError, Task, normalized_xyxy
from batchvision.intake.body import BodyLimits, check_content_length, image_from_base64, read_json
from batchvision.pipeline import PreparedTask
from batchvision.skills.caption import CaptionParams, CaptionSkill
from batchvision.skills.detect import DEFAULT_DETECT_MODEL
from batchvision.skills.query import QueryParams, QuerySkill

log = logging.getLogger(__name__)

# The statuses every real-time route answers besides its success, for the OpenAPI document
# (504: the vision-language backend did not answer in time).
router = APIRouter(
    responses=error_responses(NativeErrorBody, (*KEYED, *BODY, 402, 415, 422, 503, 504, 507))
)
_EVENTS = streamed(
    "text/event-stream",
    "with `stream: true`, the answer as server-sent events",
    {
        "type": "object",
        "properties": {
            "data": {"type": "string", "description": 'JSON: `{"chunk", "completed"}`'},
            "event": {"type": "string"},
        },
        "required": ["data"],
    },
)

REALTIME_PATHS = ("/v1/caption", "/v1/query", "/v1/detect", "/v1/point")
_ERRORS = NativeErrors()  # the Moondream surface's table: {"error": {"code", "message"}}

Output = dict[str, Any]
Shape = Callable[[Output, Output], Output]  # a skill's output, the image facts → the answer
Chunks = Callable[[PreparedTask, DecodedImage], AsyncIterator[str]]


# --- request bodies ----------------------------------------------------------------------------


class _ImageRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    image_url: StrictStr = Field(description="a data: URL (base64) or an http(s) URL")


class CaptionRequest(_ImageRequest):
    length: Literal["short", "normal", "long"] = "normal"
    stream: StrictBool = False
    settings: GenerationSettings | None = None


class QueryRequest(_ImageRequest):
    question: NonBlank
    reasoning: StrictBool = False
    stream: StrictBool = False
    settings: GenerationSettings | None = None


class ObjectRequest(_ImageRequest):
    object: NonBlank = Field(max_length=MAX_OBJECT_CHARS)


def _image_input(image_url: str, limits: BodyLimits) -> ImageInput:
    if image_url.startswith("data:"):
        return image_from_base64(0, image_url, limits)
    if image_url.lower().startswith(("http://", "https://")):
        return ImageInput(0, url=image_url)
    raise BatchVisionError(
        ErrorCode.INVALID_REQUEST,
        "image_url must be a data: URL (data:image/jpeg;base64,…) or an http(s) URL",
    )


Body = TypeVar("Body", bound=_ImageRequest)


async def _read(request: Request, model: type[Body]) -> tuple[Body, ImageInput]:
    limits = BodyLimits.from_settings(services(request).pipeline.settings)
    check_content_length(request.headers, limits)
    body = parse_body(model, await read_json(request.stream(), limits))
    return body, _image_input(body.image_url, limits)


def _target(request: Request, phrase: str) -> str:
    """The phrase, or the detector class it means to the batch lines ("people", "a car"), so
    that the local detector answers it here too."""
    names = services(request).pipeline.registry.card(DEFAULT_DETECT_MODEL).class_names()
    return coco_class_for(phrase, names) or phrase


def _sampling(settings: GenerationSettings | None) -> dict[str, Any]:
    """The settings the skills take; unknown keys were dropped while parsing."""
    if settings is None:
        return {}
    return {"settings": settings.model_dump(exclude_none=True)}


# --- answers -------------------------------------------------------------------------------------


def _failure(error: ItemError, vlm: bool) -> Response:
    """The image's error as the request's: a vision-language backend's failure is 502 with its
    reason (the backend's fault, not ours); anything else at its own code's status."""
    if vlm and error.code is ErrorCode.PROCESSING_ERROR:
        return _ERRORS.render(WireError(HTTPStatus.BAD_GATEWAY, error.code, error.message))
    raise BatchVisionError(error.code, error.message)


def _prepare(request: Request, task: Task) -> PreparedTask:
    [prepared] = services(request).pipeline.prepare_tasks([task])
    return prepared


async def _answer(
    request: Request, principal: Principal, image: ImageInput, task: Task, shape: Shape
) -> Response:
    """One image through the pipeline, metered as `/v1/analyze` meters it."""
    pipeline = services(request).pipeline
    prepared = _prepare(request, task)
    [result] = await analyze_metered(request, principal, pipeline, [image], [prepared])
    if result.errors:
        return _failure(result.errors[0], pipeline.calls_vlm(prepared))
    assert result.image is not None  # no error: the image decoded
    answer = shape(result.outputs[prepared.name], result.image)
    return JSONResponse({"request_id": request.state.request_id, **answer})


def _caption(output: Output, image: Output) -> Output:
    return {"caption": output["caption"]}


def _query(output: Output, image: Output) -> Output:
    answer: Output = {"answer": output["answer"]}
    if "reasoning" in output:
        answer["reasoning"] = {"text": output["reasoning"], "grounding": []}
    return answer


def _objects(output: Output, image: Output) -> Output:
    keys = ("x_min", "y_min", "x_max", "y_max")
    boxes = [normalized_xyxy(o["box"], image["width"], image["height"]) for o in output["objects"]]
    return {"objects": [dict(zip(keys, box, strict=True)) for box in boxes]}


def _points(output: Output, image: Output) -> Output:
    width, height = image["width"], image["height"]
    return {
        "points": [
            {"x": _fraction(p["x"], width), "y": _fraction(p["y"], height)}
            for p in output["points"]
        ]
    }


def _fraction(pixels: float, extent: int) -> float:
    return round(min(max(pixels / extent, 0.0), 1.0), 5)


# --- streams -------------------------------------------------------------------------------------


def _caption_chunks(prepared: PreparedTask, image: DecodedImage) -> AsyncIterator[str]:
    assert isinstance(prepared.skill, CaptionSkill)
    assert isinstance(prepared.params, CaptionParams)
    return prepared.skill.stream(image, prepared.params)


def _query_chunks(prepared: PreparedTask, image: DecodedImage) -> AsyncIterator[str]:
    assert isinstance(prepared.skill, QuerySkill)
    assert isinstance(prepared.params, QueryParams)
    return prepared.skill.stream([image], prepared.params)


def _event(chunk: str, *, completed: bool = False, error: BatchVisionError | None = None) -> bytes:
    data: dict[str, Any] = {"chunk": chunk, "completed": completed}
    if error is not None:
        data["error"] = {"code": error.code.value, "message": error.message}
    return f"data: {json.dumps(data)}\n\n".encode()


async def _stream(
    request: Request, principal: Principal, image: ImageInput, task: Task, chunks: Chunks
) -> Response:
    """Credits reserved and the image decoded before the first byte; the first chunk awaited
    too, so that a backend that fails at once is an ordinary error response."""
    pipeline = services(request).pipeline
    prepared = _prepare(request, task)
    calls = pipeline.vlm_calls_per_image([prepared])
    held = AsyncExitStack()  # the credit reservation and the pixels, until the stream ends
    try:
        meter = await held.enter_async_context(
            metered_request(request, principal, 1, vlm_calls_per_image=calls)
        )
        decoded = await held.enter_async_context(pipeline.decoded(image, [prepared]))
    except BaseException as exc:  # the image never decoded: every credit goes back
        await held.__aexit__(type(exc), exc, exc.__traceback__)
        raise
    call_credits = calls * pipeline.settings.credits_per_vlm_call
    stream = _OpenStream(chunks(prepared, decoded), held, meter, call_credits)
    try:
        first = await anext(stream.text, None)
    except BatchVisionError as exc:
        await stream.close(answered=False)
        return _failure(ItemError.from_exception(exc), vlm=True)
    except BaseException as exc:
        await held.__aexit__(type(exc), exc, exc.__traceback__)
        raise
    return StreamingResponse(
        stream.events(first),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache"},  # each event now, not after a cache's buffering
    )


@dataclass
class _OpenStream:
    """A streamed answer under way, and what it holds until it ends: the pixels and the
    credits reserved for it, settled when it closes."""

    text: AsyncIterator[str]
    held: AsyncExitStack
    meter: Meter
    call_credits: int  # its vision-language call's, handed back when the call does not answer

    async def events(self, first: str | None) -> AsyncIterator[bytes]:
        """The server-sent events, once the first chunk (None: an empty answer) came."""
        answered = False
        try:
            if first is not None:
                yield _event(first)
                async for chunk in self.text:
                    yield _event(chunk)
            answered = True
            yield _event("", completed=True)
        except BatchVisionError as exc:  # the backend broke off: say so in the last event
            yield _event("", completed=True, error=exc)
        except Exception:
            log.exception("a real-time stream failed")
            internal = BatchVisionError(ErrorCode.INTERNAL_ERROR, "internal server error")
            yield _event("", completed=True, error=internal)
        except BaseException:  # the client hung up: its answer was on its way, and is billed
            answered = True
            raise
        finally:
            await self.close(answered)

    async def close(self, answered: bool) -> None:
        """The backend call, then the pixels and the credits. Shielded: a client that hangs up
        cancels the stream, and the settlement must still happen."""
        if not answered:
            self.meter.refund_credits(self.call_credits)
        with anyio.CancelScope(shield=True):
            try:
                if isinstance(self.text, AsyncGenerator):
                    await self.text.aclose()
            finally:
                await self.held.aclose()


def _body(model: type[BaseModel], **example: Any) -> dict[str, Any]:
    """The route's JSON body for the OpenAPI document, with an example image inline."""
    image = f"data:image/png;base64,{TINY_PNG_BASE64}"
    return request_body("application/json", inlined_schema(model), {"image_url": image, **example})


# --- routes --------------------------------------------------------------------------------------


@router.post("/v1/caption", responses=_EVENTS, openapi_extra=_body(CaptionRequest, length="short"))
async def caption(request: Request, principal: Authorized) -> Response:
    body, image = await _read(request, CaptionRequest)
    task = Task("caption", {"length": body.length, **_sampling(body.settings)})
    if body.stream:
        return await _stream(request, principal, image, task, _caption_chunks)
    return await _answer(request, principal, image, task, _caption)


@router.post(
    "/v1/query", responses=_EVENTS, openapi_extra=_body(QueryRequest, question="What colour is it?")
)
async def query(request: Request, principal: Authorized) -> Response:
    body, image = await _read(request, QueryRequest)
    params = {"question": body.question, **_sampling(body.settings)}
    if body.stream:  # a stream carries the answer alone: asking for reasoning would mix it in
        return await _stream(request, principal, image, Task("query", params), _query_chunks)
    task = Task("query", {**params, "reasoning": body.reasoning})
    return await _answer(request, principal, image, task, _query)


@router.post("/v1/detect", openapi_extra=_body(ObjectRequest, object="person"))
async def detect(request: Request, principal: Authorized) -> Response:
    body, image = await _read(request, ObjectRequest)
    task = Task("detect", {"object": _target(request, body.object)})
    return await _answer(request, principal, image, task, _objects)


@router.post("/v1/point", openapi_extra=_body(ObjectRequest, object="person"))
async def point(request: Request, principal: Authorized) -> Response:
    body, image = await _read(request, ObjectRequest)
    task = Task("point", {"object": _target(request, body.object)})
    return await _answer(request, principal, image, task, _points)
