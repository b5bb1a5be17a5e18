"""BitMind's video routes: `POST /batch_video` (multipart `videos`, at most 20) and `POST /video`
(multipart `video`, optional `startTime`, `endTime`, `fps`), on the `synthetic` skill run over
sampled frames.

Choices where the page is silent (documented in the README):
- Frames are sampled at `fps` (default 1) between `startTime` and `endTime` (seconds), at most
  `MAX_FRAMES` (32) per video, so that one video's answer stays within seconds on a CPU.
- A video's `confidence` is the mean of its frames' AI probabilities and `isAI` is that mean at
  or above the card's high threshold: one odd frame neither condemns nor clears a video.
- Videos are spooled to files while they arrive (never in memory); one over `video_max_bytes`
  (500 MB) is 413 `video_too_large` while it arrives. More than 20 videos is 400. A video that
  cannot be read (corrupt, truncated, not a video) is that entry's error in a batch (`isAI:
  null`, `error`, `message`), and 400 `video_decode_failed` on `/video`.
- Charged `credits_per_video` per video that was read; a failed one costs nothing.
"""

from __future__ import annotations

import dataclasses
import time
from statistics import fmean
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from batchvision.accounts.scoping import Principal
from batchvision.api.access import Media, analyze_with_videos_metered
from batchvision.api.compat.bitmind.auth import SECURED, bitmind_principal
from batchvision.api.compat.bitmind.errors import ANALYSIS_STATUSES, BitmindErrorBody
from batchvision.api.openapi import error_responses
from batchvision.api.surface import services
from batchvision.core.errors import BatchVisionError, ErrorCode
from batchvision.core.types import Task, VideoResult
from batchvision.intake.body import BodyLimits, FormData, check_content_length, read_multipart
from batchvision.intake.video import FrameSampling, remove_spooled

router = APIRouter(tags=["bitmind"])
ERRORS = error_responses(BitmindErrorBody, ANALYSIS_STATUSES)

MAX_BATCH_VIDEOS = 20
MAX_FRAMES = 32


def _invalid(message: str) -> BatchVisionError:
    return BatchVisionError(ErrorCode.INVALID_REQUEST, message)


async def _form(request: Request, field: str, max_videos: int) -> FormData:
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "multipart/form-data":
        raise _invalid(f"Content-Type must be multipart/form-data with '{field}' files")
    settings = services(request).settings
    limits = BodyLimits.from_settings(settings, videos=True)
    limits = dataclasses.replace(limits, max_images=0, max_videos=max_videos)
    check_content_length(request.headers, limits)
    fields = frozenset({field, f"{field}[]"})
    form = await read_multipart(
        request.stream(), content_type, limits, image_fields=frozenset(), video_fields=fields
    )
    if not form.videos:
        raise _invalid(f"{field}: at least one video file is required")
    return form


def _number(form: FormData, name: str) -> float | None:
    text = form.field(name)
    if text is None or not text.strip():
        return None
    try:
        return float(text)
    except ValueError:
        raise _invalid(f"{name} must be a number of seconds (or frames per second)") from None


def _sampling(form: FormData) -> FrameSampling:
    fps = _number(form, "fps")
    return FrameSampling(
        fps=1.0 if fps is None else fps,
        start_time=_number(form, "startTime") or 0.0,
        end_time=_number(form, "endTime"),
        max_frames=MAX_FRAMES,
    )


async def _scored(
    request: Request, principal: Principal, form: FormData, sampling: FrameSampling
) -> list[VideoResult]:
    pipeline = services(request).pipeline
    tasks = pipeline.prepare_tasks([Task("synthetic")])
    media = Media(images=[], videos=form.videos, sampling=sampling)
    _, videos = await analyze_with_videos_metered(request, principal, pipeline, media, tasks)
    return videos


def _seconds(start: float) -> float:
    return round(time.perf_counter() - start, 3)


def video_verdict(result: VideoResult) -> dict[str, Any] | None:
    """`{isAI, confidence, processingTime}` from the frames' scores; None when none scored."""
    outputs = [
        frame.outputs["synthetic"] for frame in result.frames if "synthetic" in frame.outputs
    ]
    if result.errors or not outputs:
        return None
    confidence = round(fmean(output["ai_probability"] for output in outputs), 4)
    return {
        "isAI": confidence >= outputs[0]["threshold"],
        "confidence": confidence,
        "processingTime": _processing_time(result),
    }


def _processing_time(result: VideoResult) -> float:
    return round(result.timings_ms.get("total", 0.0) / 1000.0, 3)


def _failure(result: VideoResult) -> BatchVisionError:
    if result.errors:
        return BatchVisionError(result.errors[0].code, result.errors[0].message)
    return BatchVisionError(ErrorCode.VIDEO_DECODE_FAILED, "no frame of the video could be scored")


def _batch_entry(result: VideoResult) -> dict[str, Any]:
    verdict = video_verdict(result)
    if verdict is not None:
        return {**verdict, "batch_position": result.index}
    error = _failure(result)
    return {
        "isAI": None,
        "confidence": None,
        "processingTime": _processing_time(result),
        "batch_position": result.index,
        "error": error.code.value,
        "message": error.message,
    }


@router.post("/batch_video", dependencies=SECURED, responses=ERRORS)
async def batch_video(request: Request) -> JSONResponse:
    """Up to 20 videos (multipart `videos`): is each AI-generated?"""
    start = time.perf_counter()
    principal = await bitmind_principal(request)  # before any byte of a video is read
    form = await _form(request, "videos", MAX_BATCH_VIDEOS)
    try:
        videos = await _scored(request, principal, form, _sampling(form))
    finally:
        remove_spooled(video.path for video in form.videos)
    body = {
        "batch_results": [_batch_entry(result) for result in videos],
        "batch_count": len(videos),
        "total_time": _seconds(start),
        "request_id": f"batch_vid_{request.state.request_id}",
    }
    return JSONResponse(body)


@router.post("/video", dependencies=SECURED, responses=ERRORS)
async def video(request: Request) -> JSONResponse:
    """One video (multipart `video`, up to 500 MB; `startTime`, `endTime`, `fps`)."""
    principal = await bitmind_principal(request)  # before any byte of the video is read
    form = await _form(request, "video", 1)
    try:
        [result] = await _scored(request, principal, form, _sampling(form))
    finally:
        remove_spooled(video.path for video in form.videos)
    verdict = video_verdict(result)
    if verdict is None:
        raise _failure(result)
    return JSONResponse(verdict)
