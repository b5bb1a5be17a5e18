"""A job's work, cut into chunks, and the one function that does a chunk: `process_chunk`.

`process_chunk(work, job, spec, stop)` is a plain async function of the job and the chunk: it
reads the chunk's lines from the job's input blob, runs each line through the analyze pipeline,
writes the chunk's result lines as one blob (atomic), then records the chunk in the job ledger.
Whoever runs it — the local runner today, another worker process later — gets exactly-once
outputs from at-least-once delivery: a chunk run twice writes the same blob again and its second
ledger insert changes nothing.

Stopping a chunk whose job is ending (a cancel, the time limit, credits run out, the key revoked, a
failure in another chunk): the runner sets the chunk's `stop` event, then cancels its task. The
lines still running are cancelled; the lines that finished are written as the chunk's result blob,
in line order, and recorded with their true counts: `lines` is how many finished (fewer than the
chunk has; they need not be a prefix, lines run concurrently, and each carries its `line_index`),
and ok, failed, images and so the bill cover those lines only (of a revoked key, only those that
finished before the revoke: each line carries when it finished). Every line status has counted is
among them (a line is counted when its task ends with a result, and the stopped chunk collects every
such task after all have settled), so progress never goes backwards. Exactly-once still holds
because the runner stops chunks only after writing the job's decided end (`JobStore.decide_end`):
from then on the job runs no line again, a restart finishes the job from that decision instead of
running chunks, and so a partial row is as final as a whole one. Cancelled without `stop` set (the
server is closing), a chunk records nothing and runs again, whole, when the job resumes.

Invalid lines: a line is *invalid* when it was refused for what it says before any of its images
reached inference — its error has a client-fault code (4xx in `HTTP_STATUS`: `invalid_request`,
`invalid_parameter`, `unknown_skill`, `image_decode_failed`, `image_too_large`, `url_not_allowed`,
…), whether `parse_line`, the surface's `plan_line` or the image intake refused it. A line that
failed while being processed (`processing_error`, `model_unavailable`: e.g. a caption line
with no vision-language model here) is a valid request the server could not serve. Each chunk
records how many of its lines were invalid; a surface may end a job whose every line was
invalid `failed` with `empty_batch` (`JobSurface.all_invalid_is_empty_batch`).

Blob layout and chunking: `jobs/chunks.py`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from batchvision.core.db import utcnow
from batchvision.core.errors import HTTP_STATUS, BatchVisionError, ErrorCode
from batchvision.core.settings import Settings
from batchvision.core.types import FrameResult, ItemError, ItemResult, VideoInput, VideoResult
from batchvision.intake.body import BodyLimits
from batchvision.intake.video import remove_spooled, spool_bytes
from batchvision.jobs.blobs import Blobs
from batchvision.jobs.chunks import ChunkSpec, chunk_key, input_key
from batchvision.jobs.progress import LiveProgress
from batchvision.jobs.store import ChunkResult, FinishedLine, JobStore, JobView
from batchvision.pipeline import Pipeline, PreparedTask
from batchvision.work.lines import JobLine, LineError, LineVideo, parse_line
from batchvision.work.surface import JobSurface, LinePlan, VideoJobSurface, takes_videos

log = logging.getLogger(__name__)

OVERLOAD_PAUSE_S = 0.05


@dataclass(frozen=True)
class LineCost:
    """What one line used: the images that reached inference, the vision-language calls that
    answered, and the tokens those reported (never estimated)."""

    images: int = 0
    vlm_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    videos: int = 0  # a video line's video, once analysed (its frames are not images)


@dataclass(frozen=True)
class Prices:
    """Credits per unit, as on sync requests: an image, a video, and each vision-language call
    on an image or a frame."""

    credits_per_image: int = 0
    credits_per_vlm_call: int = 0
    credits_per_video: int = 0

    def of(self, cost: LineCost) -> int:
        return (
            cost.images * self.credits_per_image
            + cost.videos * self.credits_per_video
            + cost.vlm_calls * self.credits_per_vlm_call
        )


@dataclass(frozen=True)
class LineOutcome:
    line: dict[str, Any]  # the result line
    cost: LineCost = LineCost()  # what is billed
    invalid: bool = False  # refused for what it says (see the module docstring)
    # When it finished: a key revoked meanwhile pays only for lines finished before its revoke.
    finished_at: dt.datetime = field(default_factory=utcnow)


@dataclass
class ChunkWork:
    """What processing a chunk needs; every worker builds one from its own settings."""

    store: JobStore
    blobs: Blobs
    pipeline: Pipeline
    body_limits: BodyLimits
    line_slots: asyncio.Semaphore  # lines in flight across all chunks: bounds memory
    surfaces: Mapping[str, JobSurface]  # by `JobView.surface`
    prices: Prices = Prices()
    progress: LiveProgress = field(default_factory=LiveProgress)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        store: JobStore,
        blobs: Blobs,
        pipeline: Pipeline,
        surfaces: Mapping[str, JobSurface],
    ) -> ChunkWork:
        return cls(
            store=store,
            blobs=blobs,
            pipeline=pipeline,
            body_limits=BodyLimits.from_settings(settings, videos=True),
            line_slots=asyncio.Semaphore(settings.job_lines_in_flight),
            surfaces=surfaces,
            prices=Prices(
                settings.credits_per_image,
                settings.credits_per_vlm_call,
                settings.credits_per_video,
            ),
        )


# --- processing one chunk -------------------------------------------------------------------------


async def process_chunk(
    work: ChunkWork,
    job: JobView,
    spec: ChunkSpec,
    stop: asyncio.Event | None = None,
    *,
    attempt: int | None = None,
) -> ChunkResult | None:
    """Run the chunk's lines, write their results as one blob, record the chunk once. Stopped
    (`stop` set, then the task cancelled), the lines it finished; None if none had.
    `attempt` (a Celery delivery): the results blob is the attempt's own, so that two workers
    running the chunk at once never overwrite the blob the ledger names."""
    done = await _run_lines(work, job, spec, stop)
    if not done:
        work.progress.forget(job.id, spec.index)
        return None
    result = _chunk_result(chunk_key(job.id, spec.index, attempt), spec, done, work.prices)
    body = b"".join(json.dumps(o.line, ensure_ascii=False).encode() + b"\n" for o in done)
    finished = [FinishedLine(o.finished_at, work.prices.of(o.cost)) for o in done]
    await _uninterrupted(_write_and_record(work, job.id, result, body, finished))
    return result


def _chunk_result(
    result_key: str, spec: ChunkSpec, done: Sequence[LineOutcome], prices: Prices
) -> ChunkResult:
    failed = sum(1 for outcome in done if outcome.line["status"] == "error")
    return ChunkResult(
        index=spec.index,
        first_line=spec.first_line,
        lines=len(done),
        ok_lines=len(done) - failed,
        failed_lines=failed,
        images=sum(outcome.cost.images for outcome in done),
        videos=sum(outcome.cost.videos for outcome in done),
        result_key=result_key,
        invalid_lines=sum(1 for outcome in done if outcome.invalid),
        credits=sum(prices.of(outcome.cost) for outcome in done),
        input_tokens=sum(outcome.cost.input_tokens for outcome in done),
        output_tokens=sum(outcome.cost.output_tokens for outcome in done),
    )


async def _write_and_record(
    work: ChunkWork,
    job_id: str,
    result: ChunkResult,
    body: bytes,
    finished: Sequence[FinishedLine],
) -> None:
    await asyncio.to_thread(work.blobs.put_bytes, result.result_key, body)

    def record() -> bool:
        return work.store.record_chunk(job_id, result, finished=finished)

    await asyncio.to_thread(work.progress.commit, job_id, result.index, record)


async def _uninterrupted(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run `coroutine` to its end even when the caller is cancelled meanwhile (then re-raise).
    A blob write or a ledger commit on a worker thread cannot be stopped anyway; a runner that
    awaited this chunk must find it recorded, never recorded behind its back a moment later."""
    task = asyncio.ensure_future(coroutine)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = True
    task.result()
    if cancelled:
        raise asyncio.CancelledError


async def _run_lines(
    work: ChunkWork, job: JobView, spec: ChunkSpec, stop: asyncio.Event | None
) -> list[LineOutcome]:
    """Every line of the chunk, in order, at most `line_slots` in flight across all chunks;
    stopped, the lines that had finished, in order."""
    tasks: list[asyncio.Task[LineOutcome]] = []
    try:
        await _start_lines(work, job, spec, tasks)
        return list(await asyncio.gather(*tasks))
    except asyncio.CancelledError:
        if stop is None or not stop.is_set():
            _abandon(work, job.id, spec.index, tasks)
            raise
        current = asyncio.current_task()
        if current is not None:
            current.uncancel()  # the cancel was the stop, handled here
        return await _finished(tasks)
    except BaseException:
        _abandon(work, job.id, spec.index, tasks)
        raise


async def _start_lines(
    work: ChunkWork, job: JobView, spec: ChunkSpec, tasks: list[asyncio.Task[LineOutcome]]
) -> None:
    """Start a task per line as line slots free up, appending each to `tasks`."""
    surface = work.surfaces[job.surface]
    reader = await asyncio.to_thread(work.blobs.open, input_key(job.id))
    try:
        await asyncio.to_thread(reader.seek, spec.offset)
        for index in range(spec.first_line, spec.first_line + spec.lines):
            raw = await _read_line(work, reader)
            task = asyncio.create_task(run_line(work, surface, index, raw))
            # A done callback runs even for a task cancelled before it started.
            task.add_done_callback(lambda _: work.line_slots.release())
            task.add_done_callback(lambda done: _count_line(work, job.id, spec.index, done))
            tasks.append(task)
    finally:
        await asyncio.to_thread(reader.close)


async def _read_line(work: ChunkWork, reader: BinaryIO) -> bytes:
    """The next raw line, once a line slot is free (the slot goes with the line's task)."""
    await work.line_slots.acquire()
    try:
        return await asyncio.to_thread(reader.readline)
    except BaseException:
        work.line_slots.release()
        raise


async def _finished(tasks: list[asyncio.Task[LineOutcome]]) -> list[LineOutcome]:
    """Cancel the lines still running; once every task has settled, the ones that finished."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return [task.result() for task in tasks if not task.cancelled() and task.exception() is None]


def _abandon(
    work: ChunkWork, job_id: str, chunk: int, tasks: list[asyncio.Task[LineOutcome]]
) -> None:
    """The chunk will not be recorded by this run: its lines stop and leave the live count."""
    for task in tasks:
        task.cancel()
    work.progress.forget(job_id, chunk)


def _count_line(work: ChunkWork, job_id: str, chunk: int, task: asyncio.Task[LineOutcome]) -> None:
    if not task.cancelled() and task.exception() is None:
        work.progress.line_done(job_id, chunk, task.result().line["status"] == "ok")


async def run_line(work: ChunkWork, surface: JobSurface, index: int, raw: bytes) -> LineOutcome:
    """One result line, what it used, and whether the line was invalid."""
    skills = surface.line_skills(work.pipeline)
    line = parse_line(
        index,
        raw,
        work.body_limits,
        skills=skills,
        id_problem=surface.check_id,
        videos=takes_videos(surface),
    )
    if isinstance(line, LineError):
        return failed_line(surface, index, line.sent_id, line)
    try:
        return await _run_planned(work, surface, line)
    except BatchVisionError as exc:
        return failed_line(surface, index, line.sent_id, ItemError.from_exception(exc))
    except Exception:
        log.exception("line %d failed", index)
        error = ItemError(ErrorCode.PROCESSING_ERROR, "processing failed for this line")
        return failed_line(surface, index, line.sent_id, error)


async def _run_planned(work: ChunkWork, surface: JobSurface, line: JobLine) -> LineOutcome:
    plan = surface.plan_line(line, work.pipeline)
    if isinstance(plan, ItemError):
        return failed_line(surface, line.index, line.sent_id, plan)
    if line.video is not None:
        assert isinstance(surface, VideoJobSurface)  # parse_line takes videos only for one
        return await _run_video(work, surface, line, line.video, plan)
    results = await _analyze(work, plan)
    cost = line_cost(work.pipeline, plan.tasks, results)
    failure = _first_error(results)
    if failure is not None:
        return failed_line(surface, line.index, line.sent_id, failure, cost)
    fields = surface.encode_line(plan, results)
    return LineOutcome(ok_line(line.index, line.sent_id, fields), cost)


async def _run_video(
    work: ChunkWork, surface: VideoJobSurface, line: JobLine, video: LineVideo, plan: LinePlan
) -> LineOutcome:
    """A video line: its video spooled to a file (sent as base64) or fetched (a URL), its
    frames sampled and run through the line's task. It fails as a whole when the video does
    (unreadable, over a limit) or when every sampled frame failed."""
    item = VideoInput(0, client_id=line.id, url=video.url)
    try:
        if video.data is not None:
            item.path = await asyncio.to_thread(_spool_line_video, work.body_limits, video.data)
        result = await work.pipeline.analyze_video(item, plan.tasks, video.sampling)
    finally:
        remove_spooled([item.path])
    cost = video_cost(work.pipeline, plan.tasks, result)
    failure = result.errors[0] if result.errors else _every_frame_failed(result.frames)
    if failure is not None:
        return failed_line(surface, line.index, line.sent_id, failure, cost)
    fields = surface.encode_video_line(plan, result)
    return LineOutcome(ok_line(line.index, line.sent_id, fields), cost)


def _spool_line_video(limits: BodyLimits, data: bytes) -> Path:
    assert limits.video_dir is not None  # the job service's limits take videos
    return spool_bytes(data, limits.video_dir, limits.max_video_bytes)


def _every_frame_failed(frames: Sequence[FrameResult]) -> ItemError | None:
    if frames and all(frame.errors for frame in frames):
        return frames[0].errors[0]
    return None


def line_cost(
    pipeline: Pipeline, tasks: Sequence[PreparedTask], results: Sequence[ItemResult]
) -> LineCost:
    """What the line used (see `LineCost`); tokens from each output's `usage`, where the
    backend reported it."""
    input_tokens, output_tokens = _tokens(results)
    return LineCost(
        images=sum(1 for result in results if result.image is not None),
        vlm_calls=pipeline.vlm_calls_made(tasks, results),
        input_tokens=input_tokens,
        output_tokens=output_tokens,
    )


def video_cost(pipeline: Pipeline, tasks: Sequence[PreparedTask], result: VideoResult) -> LineCost:
    """What a video line used: its video when it was analysed (not when it failed as a
    whole, which costs nothing, as on sync requests), the calls answered on its frames and the
    tokens those reported."""
    input_tokens, output_tokens = _tokens(result.frames)
    return LineCost(
        videos=0 if result.errors else 1,
        vlm_calls=pipeline.vlm_calls_made(tasks, result.frames),
        input_tokens=input_tokens,
        output_tokens=output_tokens,
    )


def _tokens(results: Sequence[ItemResult]) -> tuple[int, int]:
    """Input and output tokens from each output's `usage`, where the backend reported it."""
    usages = [
        output["usage"]
        for result in results
        for output in result.outputs.values()
        if isinstance(output.get("usage"), Mapping)
    ]
    return (
        sum(int(usage.get("input_tokens", 0)) for usage in usages),
        sum(int(usage.get("output_tokens", 0)) for usage in usages),
    )


def failed_line(
    surface: JobSurface,
    index: int,
    sent_id: Any,
    error: ItemError,
    cost: LineCost | None = None,
) -> LineOutcome:
    """A failed line; invalid when a client-fault code refused it before any inference."""
    cost = cost or LineCost()
    invalid = cost.images == 0 and cost.videos == 0 and HTTP_STATUS[error.code] < 500
    return LineOutcome(error_line(surface, index, sent_id, error), cost, invalid)


async def _analyze(work: ChunkWork, plan: LinePlan) -> list[ItemResult]:
    """The pipeline, waiting out overload: a job yields to interactive requests, never fails
    a line because the queue was momentarily full. A plan that runs its task over all its
    images together (`LinePlan.together`) makes one call."""
    while True:
        try:
            if plan.together:
                return await work.pipeline.analyze_together(plan.images, plan.tasks[0])
            return await work.pipeline.analyze(plan.images, plan.tasks)
        except BatchVisionError as exc:
            if exc.code is not ErrorCode.OVERLOADED:
                raise
        await asyncio.sleep(OVERLOAD_PAUSE_S)


def _first_error(results: Sequence[ItemResult]) -> ItemError | None:
    for position, result in enumerate(results):
        if result.errors:
            error = result.errors[0]
            if len(results) == 1:
                return error
            return ItemError(error.code, f"images[{position}]: {error.message}", error.skill)
    return None


def ok_line(index: int, sent_id: Any, fields: dict[str, Any]) -> dict[str, Any]:
    return {"line_index": index, "id": sent_id, "status": "ok", **fields}


def error_line(surface: JobSurface, index: int, sent_id: Any, error: ItemError) -> dict[str, Any]:
    return {
        "line_index": index,
        "id": sent_id,
        "status": "error",
        "error": surface.line_error(error),
    }
