"""A job's work, cut into chunks, and the one function that does a chunk: `process_chunk`.

`process_chunk(work, job, spec)` is a plain async function of the job and the chunk: it reads
the chunk's lines from the job's input blob, runs each line through the analyze pipeline,
writes the chunk's result lines as one blob (atomic), then records the chunk in the job ledger.
Whoever runs it — the local runner today, another worker process later — gets exactly-once
outputs from at-least-once delivery: a chunk run twice writes the same blob again and its second
ledger insert changes nothing.

Blob layout and chunking: `jobs/chunks.py`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from batchvision.core.errors import BatchVisionError, ErrorCode
from batchvision.core.types import ItemError, ItemResult
from batchvision.intake.body import BodyLimits
from batchvision.jobs.blobs import Blobs
from batchvision.jobs.chunks import ChunkSpec, chunk_key, input_key
from batchvision.jobs.progress import LiveProgress
from batchvision.jobs.store import ChunkResult, JobStore, JobView
from batchvision.pipeline import Pipeline
from batchvision.work.lines import JobLine, LineError, parse_line
from batchvision.work.surface import JobSurface, LinePlan

log = logging.getLogger(__name__)

OVERLOAD_PAUSE_S = 0.05

LineOutcome = tuple[dict[str, Any], int]  # the result line, images that reached inference


@dataclass
class ChunkWork:
    """What processing a chunk needs; every worker builds one from its own settings."""

    store: JobStore
    blobs: Blobs
    pipeline: Pipeline
    body_limits: BodyLimits
    line_slots: asyncio.Semaphore  # lines in flight across all chunks: bounds memory
    surfaces: Mapping[str, JobSurface]  # by `JobView.surface`
    credits_per_image: int = 0
    progress: LiveProgress = field(default_factory=LiveProgress)


# --- processing one chunk -------------------------------------------------------------------------


async def process_chunk(work: ChunkWork, job: JobView, spec: ChunkSpec) -> ChunkResult:
    """Run the chunk's lines, write their results as one blob, record the chunk once."""
    done = await _run_lines(work, job, spec)
    body = b"".join(json.dumps(line, ensure_ascii=False).encode() + b"\n" for line, _ in done)
    key = chunk_key(job.id, spec.index)
    await asyncio.to_thread(work.blobs.put_bytes, key, body)
    failed = sum(1 for line, _ in done if line["status"] == "error")
    result = ChunkResult(
        index=spec.index,
        first_line=spec.first_line,
        lines=spec.lines,
        ok_lines=spec.lines - failed,
        failed_lines=failed,
        images=sum(images for _, images in done),
        result_key=key,
    )

    def record() -> bool:
        return work.store.record_chunk(job.id, result, credits_per_image=work.credits_per_image)

    await asyncio.to_thread(work.progress.commit, job.id, spec.index, record)
    return result


async def _run_lines(work: ChunkWork, job: JobView, spec: ChunkSpec) -> list[LineOutcome]:
    """Every line of the chunk, in order, at most `line_slots` in flight across all chunks."""
    surface = work.surfaces[job.surface]
    reader = await asyncio.to_thread(work.blobs.open, input_key(job.id))
    tasks: list[asyncio.Task[LineOutcome]] = []
    try:
        await asyncio.to_thread(reader.seek, spec.offset)
        for index in range(spec.first_line, spec.first_line + spec.lines):
            await work.line_slots.acquire()
            try:
                raw = await asyncio.to_thread(reader.readline)
            except BaseException:
                work.line_slots.release()
                raise
            task = asyncio.create_task(run_line(work, surface, index, raw))
            # A done callback runs even for a task cancelled before it started.
            task.add_done_callback(lambda _: work.line_slots.release())
            task.add_done_callback(lambda done: _count_line(work, job.id, spec.index, done))
            tasks.append(task)
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        work.progress.forget(job.id, spec.index)
        raise
    finally:
        await asyncio.to_thread(reader.close)


def _count_line(work: ChunkWork, job_id: str, chunk: int, task: asyncio.Task[LineOutcome]) -> None:
    if not task.cancelled() and task.exception() is None:
        work.progress.line_done(job_id, chunk, task.result()[0]["status"] == "ok")


async def run_line(work: ChunkWork, surface: JobSurface, index: int, raw: bytes) -> LineOutcome:
    """One result line and the number of images that reached inference (what is billed)."""
    skills = surface.line_skills(work.pipeline)
    line = parse_line(index, raw, work.body_limits, skills=skills, id_problem=surface.check_id)
    if isinstance(line, LineError):
        return error_line(surface, index, line.sent_id, line), 0
    try:
        return await _run_planned(work, surface, line)
    except BatchVisionError as exc:
        return error_line(surface, index, line.sent_id, ItemError.from_exception(exc)), 0
    except Exception:
        log.exception("line %d failed", index)
        error = ItemError(ErrorCode.PROCESSING_ERROR, "processing failed for this line")
        return error_line(surface, index, line.sent_id, error), 0


async def _run_planned(work: ChunkWork, surface: JobSurface, line: JobLine) -> LineOutcome:
    plan = surface.plan_line(line, work.pipeline)
    if isinstance(plan, ItemError):
        return error_line(surface, line.index, line.sent_id, plan), 0
    results = await _analyze(work, plan)
    images = sum(1 for r in results if r.image is not None)
    failure = _first_error(results)
    if failure is not None:
        return error_line(surface, line.index, line.sent_id, failure), images
    return ok_line(line.index, line.sent_id, surface.encode_line(plan, results)), images


async def _analyze(work: ChunkWork, plan: LinePlan) -> list[ItemResult]:
    """The pipeline, waiting out overload: a job yields to interactive requests, never fails
    a line because the queue was momentarily full."""
    while True:
        try:
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
