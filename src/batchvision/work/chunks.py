"""A job's work, cut into chunks, and the one function that does a chunk: `process_chunk`.

`process_chunk(work, job, spec)` is a plain async function of the job and the chunk: it reads
the chunk's lines from the job's input blob, runs each line through the analyze pipeline,
writes the chunk's result lines as one blob (atomic), then records the chunk in the job ledger.
Whoever runs it — the local runner today, another worker process later — gets exactly-once
outputs from at-least-once delivery: a chunk run twice writes the same blob again and its second
ledger insert changes nothing.

Blob layout for job J: `jobs/J/input.jsonl` (deleted when the job ends), `jobs/J/index.json`
(byte offset of each chunk's first line, written by chunking), `jobs/J/chunks/NNNNNN.jsonl`
(one per recorded chunk, until the outputs are assembled) and `jobs/J/outputs/NNNNN.jsonl`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from batchvision.api.compat.moondream.lines import MOONDREAM_SKILLS, moondream_result, plan_line
from batchvision.core.errors import BatchVisionError, ErrorCode
from batchvision.core.types import ItemError, ItemResult, Task
from batchvision.intake.body import BodyLimits
from batchvision.jobs.blobs import Blobs
from batchvision.jobs.progress import LiveProgress
from batchvision.jobs.store import ChunkResult, JobStore, JobView
from batchvision.jobs.validate import (
    JobLine,
    JsonlLimits,
    LineError,
    parse_line,
    validate_stream,
)
from batchvision.pipeline import Pipeline
from batchvision.skills.detect import DEFAULT_DETECT_MODEL

log = logging.getLogger(__name__)

OVERLOAD_PAUSE_S = 0.05

# Moondream promises four per-line codes; ours map onto the nearest of them.
_MOONDREAM_CODES = {
    ErrorCode.INVALID_REQUEST: "invalid_request",
    ErrorCode.INVALID_PARAMETER: "invalid_request",
    ErrorCode.TOO_MANY_IMAGES: "invalid_request",
    ErrorCode.UNKNOWN_SKILL: "unknown_skill",
    ErrorCode.IMAGE_DECODE_FAILED: "image_decode_failed",
    ErrorCode.UNSUPPORTED_FORMAT: "image_decode_failed",
    ErrorCode.IMAGE_TOO_LARGE: "image_decode_failed",
    ErrorCode.FETCH_FAILED: "image_decode_failed",
    ErrorCode.URL_NOT_ALLOWED: "image_decode_failed",
}


def input_key(job_id: str) -> str:
    return f"jobs/{job_id}/input.jsonl"


def index_key(job_id: str) -> str:
    return f"jobs/{job_id}/index.json"


def chunk_key(job_id: str, index: int) -> str:
    return f"jobs/{job_id}/chunks/{index:06d}.jsonl"


def output_key(job_id: str, index: int) -> str:
    return f"jobs/{job_id}/outputs/{index:05d}.jsonl"


@dataclass(frozen=True)
class ChunkSpec:
    index: int
    first_line: int
    lines: int
    offset: int  # byte offset of the first line in the input blob


@dataclass
class ChunkWork:
    """What processing a chunk needs; every worker builds one from its own settings."""

    store: JobStore
    blobs: Blobs
    pipeline: Pipeline
    body_limits: BodyLimits
    line_slots: asyncio.Semaphore  # lines in flight across all chunks: bounds memory
    credits_per_image: int = 0
    progress: LiveProgress = field(default_factory=LiveProgress)


# --- chunking: validate the file and index its chunks ------------------------------------------


def scan_input(
    blobs: Blobs, key: str, limits: JsonlLimits, chunk_lines: int
) -> tuple[int, list[int]]:
    """Validate the input blob while noting where each chunk starts; (lines, chunk offsets)."""
    info = blobs.info(key)
    starts = _ChunkStarts(chunk_lines)
    with blobs.open(key) as file:
        size = info.size if info is not None else None
        lines = validate_stream(file, limits, size=size, on_block=starts.feed).lines
    return lines, starts.offsets[: -(-lines // chunk_lines)]


class _ChunkStarts:
    """Byte offsets of every `chunk_lines`-th line start, from the blocks of one pass."""

    def __init__(self, chunk_lines: int) -> None:
        self.chunk_lines = chunk_lines
        self.offsets = [0]
        self._newlines = 0
        self._position = 0

    def feed(self, block: bytes) -> None:
        start = block.find(b"\n")
        while start != -1:
            self._newlines += 1
            if self._newlines % self.chunk_lines == 0:
                self.offsets.append(self._position + start + 1)
            start = block.find(b"\n", start + 1)
        self._position += len(block)


def write_index(blobs: Blobs, job_id: str, chunk_lines: int, offsets: list[int]) -> None:
    body = json.dumps({"chunk_lines": chunk_lines, "offsets": offsets}).encode()
    blobs.put_bytes(index_key(job_id), body)


def chunk_specs(blobs: Blobs, job: JobView) -> list[ChunkSpec]:
    with blobs.open(index_key(job.id)) as file:
        index = json.load(file)
    size = int(index["chunk_lines"])
    return [
        ChunkSpec(i, i * size, min(size, job.total_lines - i * size), int(offset))
        for i, offset in enumerate(index["offsets"])
    ]


# --- processing one chunk -------------------------------------------------------------------------


async def process_chunk(work: ChunkWork, job: JobView, spec: ChunkSpec) -> ChunkResult:
    """Run the chunk's lines, write their results as one blob, record the chunk once."""
    reader = await asyncio.to_thread(work.blobs.open, input_key(job.id))
    try:
        await asyncio.to_thread(reader.seek, spec.offset)
        tasks: list[asyncio.Task[tuple[dict[str, Any], int]]] = []
        try:
            for index in range(spec.first_line, spec.first_line + spec.lines):
                await work.line_slots.acquire()
                try:
                    raw = await asyncio.to_thread(reader.readline)
                except BaseException:
                    work.line_slots.release()
                    raise
                task = asyncio.create_task(run_line(work, job.surface, index, raw))
                # A done callback runs even for a task cancelled before it started.
                task.add_done_callback(lambda _: work.line_slots.release())
                task.add_done_callback(lambda done: _count_line(work, job.id, spec.index, done))
                tasks.append(task)
            done = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            work.progress.forget(job.id, spec.index)
            raise
    finally:
        await asyncio.to_thread(reader.close)
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


def _count_line(
    work: ChunkWork, job_id: str, chunk: int, task: asyncio.Task[tuple[dict[str, Any], int]]
) -> None:
    if not task.cancelled() and task.exception() is None:
        work.progress.line_done(job_id, chunk, task.result()[0]["status"] == "ok")


async def run_line(
    work: ChunkWork, surface: str, index: int, raw: bytes
) -> tuple[dict[str, Any], int]:
    """One result line and the number of images that reached inference (what is billed)."""
    skills = MOONDREAM_SKILLS if surface == "moondream" else work.pipeline.skills.keys()
    line = parse_line(index, raw, work.body_limits, skills=skills)
    if isinstance(line, LineError):
        if surface == "moondream" and line.bad_image_data:
            # Moondream reports undecodable image data, base64 included, as image_decode_failed.
            bad = ItemError(ErrorCode.IMAGE_DECODE_FAILED, line.message, line.skill)
            return error_line(index, line.sent_id, bad, surface), 0
        return error_line(index, line.sent_id, line, surface), 0
    try:
        if surface == "moondream":
            return await _run_moondream(work, line)
        return await _run_native(work, line)
    except BatchVisionError as exc:
        return error_line(index, line.sent_id, ItemError.from_exception(exc), surface), 0
    except Exception:
        log.exception("line %d failed", index)
        error = ItemError(ErrorCode.PROCESSING_ERROR, "processing failed for this line")
        return error_line(index, line.sent_id, error, surface), 0


async def _run_native(work: ChunkWork, line: JobLine) -> tuple[dict[str, Any], int]:
    tasks = work.pipeline.prepare_tasks([Task(line.skill, line.params)])
    results = await _analyze(work, line, tasks)
    images = sum(1 for r in results if r.image is not None)
    failure = _first_error(results)
    if failure is not None:
        return error_line(line.index, line.sent_id, failure, "native"), images
    outputs = [r.outputs[line.skill] for r in results]
    result = outputs[0] if len(outputs) == 1 else {"images": outputs}
    return ok_line(line.index, line.sent_id, result), images


async def _run_moondream(work: ChunkWork, line: JobLine) -> tuple[dict[str, Any], int]:
    names = work.pipeline.registry.card(DEFAULT_DETECT_MODEL).class_names()
    plan = plan_line(line, names)
    if isinstance(plan, ItemError):
        return error_line(line.index, line.sent_id, plan, "moondream"), 0
    params = {"model": DEFAULT_DETECT_MODEL, "classes": [plan.class_name]}
    tasks = work.pipeline.prepare_tasks([Task("detect", params)])
    results = await _analyze(work, line, tasks)
    images = sum(1 for r in results if r.image is not None)
    failure = _first_error(results)
    if failure is not None:
        return error_line(line.index, line.sent_id, failure, "moondream"), images
    output = ok_line(line.index, line.sent_id, moondream_result(plan, results[0].outputs["detect"]))
    # The page's successful line carries usage; a detector line uses no tokens.
    output["usage"] = {"input_tokens": 0, "output_tokens": 0}
    return output, images


async def _analyze(work: ChunkWork, line: JobLine, tasks: Sequence[Any]) -> list[ItemResult]:
    """The pipeline, waiting out overload: a job yields to interactive requests, never fails
    a line because the queue was momentarily full."""
    while True:
        try:
            return await work.pipeline.analyze(line.images, tasks)
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


def ok_line(index: int, client_id: str | int | None, result: dict[str, Any]) -> dict[str, Any]:
    return {"line_index": index, "id": client_id, "status": "ok", "result": result}


def error_line(
    index: int, client_id: str | int | None, error: ItemError, surface: str
) -> dict[str, Any]:
    code = error.code.value
    if surface == "moondream":
        code = _MOONDREAM_CODES.get(error.code, "processing_error")
    return {
        "line_index": index,
        "id": client_id,
        "status": "error",
        "error": {"code": code, "message": error.message},
    }
