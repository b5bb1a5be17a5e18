"""The native API: `/v1/analyze`, `/v1/skills`, `/v1/models`, `/healthz`, `/readyz`.

`POST /v1/analyze` takes multipart (`images` repeated, `tasks` a form field) or JSON
(`{images, tasks}`), read with the limits enforced while the bytes arrive and then checked by
the pydantic models below. Choices (in the README's "Using it" and "Errors"):
- `images` entries are base64 strings (or data: URIs) or `{data | url, id?, filename?}`. A
  malformed entry (not an object, neither or both of data/url, a field of the wrong type) fails
  only that image, `invalid_request` in its `errors`; an `id` that is not a string or an
  integer (integers come back as their text) or is over 256 characters fails the request, as
  the image could not be reported under it.
- `tasks` is `[{skill, params}]`, a list of skill names, or text: "detect,metadata" or a JSON
  task list (what the multipart field carries); not sent means `detect`. `params` that are not
  an object are 422 `invalid_parameter`, like the skills' own checks; every other problem is
  400 `invalid_request`. Unknown fields are ignored.
- Messages name each field and why, "tasks.0.skill: Field required"; more than
  `max_images_per_request` images is 413 `too_many_images` before any image is decoded.
- Videos: multipart `videos` parts (repeated), spooled to files while they arrive (one past
  `video_max_bytes` stops the request: 413 `video_too_large`), or JSON `videos` entries
  `{video: base64 | data URI | http(s) URL, id?, filename?}` (or the bare string). Sampling is
  request-level: `fps`, `start_time`, `end_time`, `max_frames` as form or JSON fields. The
  response carries them in `videos`, beside `results` for the images. Spooled files are
  deleted when the request ends, whatever its end.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Self

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictStr,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from batchvision.accounts.scoping import Principal
from batchvision.api.access import Media, analyze_with_videos_metered, native_principal
from batchvision.api.bodies import Model, json_object, refusal
from batchvision.api.native.outputs import native_outputs
from batchvision.api.openapi import KEYED, TINY_PNG_BASE64, NativeErrorBody, error_responses
from batchvision.api.surface import services
from batchvision.core.errors import BatchVisionError, ErrorCode, describe_problems
from batchvision.core.types import (
    FrameResult,
    ImageInput,
    ItemError,
    ItemResult,
    Task,
    VideoInput,
    VideoResult,
)
from batchvision.intake.body import (
    BodyLimits,
    check_content_length,
    image_from_base64,
    read_json,
    read_multipart,
    refuse_unpaired_surrogates,
    too_many_images,
    too_many_videos,
    video_from_base64,
)
from batchvision.intake.video import FrameSampling, remove_spooled, spool_bytes
from batchvision.pipeline import PreparedTask
from batchvision.skills import SKILL_TYPES

router = APIRouter()

Authorized = Annotated[Principal, Depends(native_principal)]

_MAX_ID_LENGTH = 256
_SAMPLING_DOC: dict[str, Any] = {
    "fps": {"type": "number", "description": "video frames analysed per second (default 1)"},
    "start_time": {"type": "number", "description": "seconds; default 0"},
    "end_time": {"type": "number", "description": "seconds; default the end"},
    "max_frames": {"type": "integer", "description": "per video; default 300"},
}
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
                        "videos": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                        },
                        "tasks": {
                            "type": "string",
                            "description": "JSON task list or comma-separated skill names",
                        },
                        **_SAMPLING_DOC,
                    },
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
                        "videos": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "video": {
                                        "type": "string",
                                        "description": "base64, data URI or http(s) URL",
                                    },
                                    "id": {"type": "string"},
                                },
                                "required": ["video"],
                            },
                        },
                        **_SAMPLING_DOC,
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
                },
                "example": {
                    "images": [{"data": TINY_PNG_BASE64, "id": "white-square"}],
                    "tasks": [{"skill": "detect"}, {"skill": "metadata"}],
                },
            },
        },
    }
}


def _invalid(message: str) -> BatchVisionError:
    return BatchVisionError(ErrorCode.INVALID_REQUEST, message)


# --- the request as pydantic models ---------------------------------------------------------


def _task_text(value: Any) -> Any:
    """Tasks as text (the multipart field, or a JSON string): a JSON task list, or skill names
    separated by commas."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if not text.startswith("["):
        return [name.strip() for name in text.split(",") if name.strip()]
    try:
        parsed = json.loads(text)
    except (ValueError, RecursionError):
        raise PydanticCustomError("json_invalid", "is not valid JSON") from None
    try:  # a JSON body was checked as a whole; the text of a form field was not
        refuse_unpaired_surrogates(parsed)
    except BatchVisionError:
        raise PydanticCustomError("surrogate", "contains an unpaired surrogate escape") from None
    return parsed


def _named_task(entry: Any) -> Any:
    """A bare skill name is that skill with its default params."""
    if isinstance(entry, str):
        return {"skill": entry}
    if not isinstance(entry, dict):
        raise PydanticCustomError("task_type", "must be a skill name or {skill, params}")
    return entry


class TaskSpec(BaseModel):
    model_config = ConfigDict(extra="ignore")

    skill: StrictStr
    params: dict[str, Any] | None = None  # checked by the skill; null means its defaults

    def task(self) -> Task:
        return Task(self.skill, self.params or {})


Tasks = Annotated[
    list[Annotated[TaskSpec, BeforeValidator(_named_task)]], BeforeValidator(_task_text)
]


class AnalyzeTasks(BaseModel):
    """The tasks of a request: `[{skill, params}]`, `["detect", ...]` or "detect,metadata"."""

    model_config = ConfigDict(extra="ignore")

    tasks: Tasks | None = None  # not sent: detect

    def core_tasks(self) -> list[Task]:
        return [Task("detect")] if self.tasks is None else [spec.task() for spec in self.tasks]


class Sampling(BaseModel):
    """Which frames of the request's videos are analysed (`intake.video.FrameSampling`)."""

    model_config = ConfigDict(extra="ignore")

    fps: float = 1.0
    start_time: float = 0.0
    end_time: float | None = None
    max_frames: int = 300

    def sampling(self) -> FrameSampling:
        return FrameSampling(self.fps, self.start_time, self.end_time, self.max_frames)


class AnalyzeJson(AnalyzeTasks, Sampling):
    # Entries are checked one by one (`_json_image`): a malformed one fails only itself.
    images: list[Any] = []
    videos: list[Any] = []


class JsonVideo(BaseModel):
    """An object in the JSON `videos` list: `video` is base64, a data: URI or an http(s) URL."""

    model_config = ConfigDict(extra="ignore")

    video: StrictStr
    filename: StrictStr | None = None

    @model_validator(mode="before")
    @classmethod
    def _an_object(cls, entry: Any) -> Any:
        if isinstance(entry, str):
            return {"video": entry}
        if not isinstance(entry, dict):
            raise PydanticCustomError("video_type", "must be a string or {video, id?}")
        return entry

    @property
    def is_url(self) -> bool:
        return self.video.startswith(("http://", "https://"))


def _image_id(value: Any) -> Any:
    """An image id is a string or an integer (kept as its text); a boolean is neither."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise PydanticCustomError("image_id", "must be a string or an integer")
    return str(value)


ImageId = Annotated[str, Field(max_length=_MAX_ID_LENGTH), BeforeValidator(_image_id)]
_IMAGE_ID: TypeAdapter[str | None] = TypeAdapter(ImageId | None)


class JsonImage(BaseModel):
    """An object in the JSON `images` list (its `id` is checked on its own, by `_client_id`)."""

    model_config = ConfigDict(extra="ignore")

    data: StrictStr | None = None  # base64 or a data: URI
    url: StrictStr | None = None
    filename: StrictStr | None = None

    @model_validator(mode="before")
    @classmethod
    def _an_object(cls, entry: Any) -> Any:
        if not isinstance(entry, dict):
            raise PydanticCustomError("image_type", "must be a base64 string or an object")
        return entry

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.data is None) == (self.url is None):
            raise PydanticCustomError("image_source", "needs exactly one of 'data' or 'url'")
        return self


# --- reading the request --------------------------------------------------------------------


def _problem_code(exc: ValidationError) -> ErrorCode:
    # Params that are not an object are a parameter problem, like the skills' own checks.
    if all("params" in error["loc"] for error in exc.errors()):
        return ErrorCode.INVALID_PARAMETER
    return ErrorCode.INVALID_REQUEST


def _parse(model: type[Model], body: Any) -> Model:
    try:
        return model.model_validate(json_object(body))
    except ValidationError as exc:
        raise refusal(exc, _problem_code(exc)) from None


def _client_id(index: int, entry: Any, where: str = "images") -> str | None:
    """A bad id fails the request: the image could not be reported under it."""
    try:
        return _IMAGE_ID.validate_python(entry.get("id") if isinstance(entry, dict) else None)
    except ValidationError as exc:
        raise refusal(exc, where=f"{where}.{index}.id") from None


def _refused(index: int, message: str, client_id: str | None = None) -> ImageInput:
    return ImageInput(
        index, client_id=client_id, error=ItemError(ErrorCode.INVALID_REQUEST, message)
    )


def _json_image(index: int, entry: Any, limits: BodyLimits) -> ImageInput:
    """One entry of the JSON `images` list: a base64 string or `{data | url, id?, filename?}`.
    A malformed entry fails only itself."""
    if isinstance(entry, str):
        return image_from_base64(index, entry, limits)
    client_id = _client_id(index, entry)
    try:
        image = JsonImage.model_validate(entry)
    except ValidationError as exc:
        return _refused(index, describe_problems(exc.errors(), where="image"), client_id)
    if image.data is not None:
        item = image_from_base64(index, image.data, limits, client_id=client_id)
    else:
        item = ImageInput(index, client_id=client_id, url=image.url)
    item.filename = image.filename
    return item


def _json_video(index: int, entry: Any, limits: BodyLimits) -> VideoInput:
    """One entry of the JSON `videos` list; base64 is written to a spool file (the JSON body
    already held it in memory, within `max_request_bytes`). A malformed entry fails itself."""
    client_id = _client_id(index, entry, where="videos")
    try:
        video = JsonVideo.model_validate(entry)
    except ValidationError as exc:
        problem = ItemError(
            ErrorCode.INVALID_REQUEST, describe_problems(exc.errors(), where="video")
        )
        return VideoInput(index, client_id=client_id, error=problem)
    item = VideoInput(index, filename=video.filename, client_id=client_id)
    if video.is_url:
        item.url = video.video
        return item
    assert limits.video_dir is not None
    try:
        data = video_from_base64(video.video, limits.max_video_bytes)
        item.path = spool_bytes(data, limits.video_dir, limits.max_video_bytes)
    except BatchVisionError as exc:
        item.error = ItemError.from_exception(exc)
    return item


def _json_videos(entries: list[Any], limits: BodyLimits) -> list[VideoInput]:
    videos: list[VideoInput] = []
    try:
        for index, entry in enumerate(entries):
            videos.append(_json_video(index, entry, limits))
    except BaseException:
        remove_spooled(video.path for video in videos)
        raise
    return videos


async def _read_json(request: Request, limits: BodyLimits) -> AnalyzeRequest:
    body = _parse(AnalyzeJson, await read_json(request.stream(), limits))
    if len(body.images) > limits.max_images:
        raise too_many_images(limits.max_images)
    if len(body.videos) > limits.max_videos:
        raise too_many_videos(limits.max_videos)
    sampling = body.sampling()
    inputs = [_json_image(i, entry, limits) for i, entry in enumerate(body.images)]
    # Base64 videos are big: decoding and writing them would block the event loop a while.
    base64_limits = dataclasses.replace(limits, max_image_bytes=limits.max_video_bytes)
    videos = await asyncio.to_thread(_json_videos, body.videos, base64_limits)
    return AnalyzeRequest(Media(inputs, videos, sampling), body.core_tasks())


async def _read_form(request: Request, content_type: str, limits: BodyLimits) -> AnalyzeRequest:
    stream = request.stream()
    form = await read_multipart(stream, content_type, limits, video_fields=frozenset({"videos"}))
    try:
        fields = {name: form.field(name) for name in form.fields}
        tasks = _parse(AnalyzeTasks, {"tasks": form.field("tasks")}).core_tasks()
        sampling = _parse(Sampling, {k: v for k, v in fields.items() if v is not None})
        return AnalyzeRequest(Media(form.images, form.videos, sampling.sampling()), tasks)
    except BaseException:
        remove_spooled(video.path for video in form.videos)
        raise


@dataclass(frozen=True)
class AnalyzeRequest:
    media: Media
    tasks: list[Task]


@asynccontextmanager
async def read_analyze_request(
    request: Request, limits: BodyLimits
) -> AsyncIterator[AnalyzeRequest]:
    """The request read; the videos it spooled are deleted when the block ends."""
    content_type = request.headers.get("content-type", "")
    media_type = content_type.split(";")[0].strip().lower()
    if media_type == "multipart/form-data":
        check_content_length(request.headers, limits)
        read = await _read_form(request, content_type, limits)
    elif media_type == "application/json":
        # A JSON body holds its videos in it: max_request_bytes bounds it all.
        check_content_length(request.headers, dataclasses.replace(limits, max_videos=0))
        read = await _read_json(request, limits)
    else:
        raise BatchVisionError(
            ErrorCode.UNSUPPORTED_FORMAT,
            "Content-Type must be multipart/form-data or application/json",
        )
    try:
        yield read
    finally:
        remove_spooled(video.path for video in read.media.videos)


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


def _frame_to_dict(frame: FrameResult) -> dict[str, Any]:
    return {
        "number": frame.number,
        "time_s": frame.time_s,
        "outputs": native_outputs(frame),
        "errors": [error.to_dict() for error in frame.errors],
    }


def video_to_dict(result: VideoResult) -> dict[str, Any]:
    return {
        "index": result.index,
        "id": result.client_id,
        "filename": result.filename,
        "status": "error" if result.errors else "ok",
        "video": result.video,
        "frames": [_frame_to_dict(frame) for frame in result.frames],
        "summary": result.summary,
        "errors": [error.to_dict() for error in result.errors],
        "timings_ms": result.timings_ms,
    }


def _summary(results: Sequence[ItemResult], videos: Sequence[VideoResult]) -> dict[str, int]:
    failed = sum(1 for r in results if _status(r) == "error")
    summary = {"images": len(results), "succeeded": len(results) - failed, "failed": failed}
    if videos:
        summary["videos"] = len(videos)
        summary["videos_failed"] = sum(1 for video in videos if video.errors)
    return summary


def _tasks_to_dicts(tasks: list[PreparedTask]) -> list[dict[str, Any]]:
    return [{"skill": t.name, "params": t.params.model_dump(mode="json")} for t in tasks]


# The statuses each route answers besides its success, for the OpenAPI document.
_ANALYZE_ERRORS = error_responses(NativeErrorBody, (*KEYED, 400, 402, 408, 413, 415, 422, 503, 507))
_READ_ERRORS = error_responses(NativeErrorBody, KEYED)
_HEALTH_ERRORS = error_responses(NativeErrorBody, (500,))
_READY_RESPONSES: dict[int | str, Any] = {
    503: {"description": "busy: as many images in flight as admission allows (the same body)"},
    **_HEALTH_ERRORS,
}


@router.post("/v1/analyze", openapi_extra=_ANALYZE_DOC, tags=["native"], responses=_ANALYZE_ERRORS)
async def analyze(request: Request, principal: Authorized) -> JSONResponse:
    """Run skills over a batch of images and videos; per-image results come back in request
    order in `results`, per-video results (sampled frames and a summary) in `videos`."""
    start = time.perf_counter()
    pipeline = services(request).pipeline
    limits = BodyLimits.from_settings(pipeline.settings, videos=True)
    async with read_analyze_request(request, limits) as read:
        if not read.media.images and not read.media.videos:
            raise _invalid("send at least one item in images or videos")
        tasks = pipeline.prepare_tasks(read.tasks)
        results, videos = await analyze_with_videos_metered(
            request, principal, pipeline, read.media, tasks
        )
    return JSONResponse(
        {
            "id": getattr(request.state, "request_id", None) or uuid.uuid4().hex,
            "tasks": _tasks_to_dicts(tasks),
            "results": [result_to_dict(r) for r in results],
            "videos": [video_to_dict(v) for v in videos],
            "summary": _summary(results, videos),
            "timings_ms": {"total": round((time.perf_counter() - start) * 1000.0, 2)},
        }
    )


@router.get("/v1/skills", tags=["native"], responses=_READ_ERRORS)
async def list_skills(principal: Authorized) -> dict[str, Any]:
    return {"skills": [skill.describe() for skill in SKILL_TYPES.values()]}


@router.get("/v1/models", tags=["native"], responses=_READ_ERRORS)
async def list_models(request: Request, principal: Authorized) -> dict[str, Any]:
    registry = services(request).pipeline.registry
    return {"models": [status.to_dict() for status in registry.statuses()]}


@router.get("/healthz", tags=["ops"], responses=_HEALTH_ERRORS)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", tags=["ops"], responses=_READY_RESPONSES)
async def readyz(request: Request) -> JSONResponse:
    pipeline = services(request).pipeline
    saturated = pipeline.engine.in_flight >= pipeline.settings.max_queued_images
    body = {
        "status": "busy" if saturated else "ready",
        "in_flight_images": pipeline.engine.in_flight,
        "loaded_models": pipeline.registry.loaded_names(),
        "backends": await pipeline.backend_health(),
    }
    # Readiness stays this server's own: an optional VLM being down fails only its requests.
    return JSONResponse(body, status_code=503 if saturated else 200)
