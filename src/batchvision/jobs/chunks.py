"""Where a job's files live, and how its input is cut into chunks (validated and indexed in one
pass). The storage side of chunking: `work/chunks.py` processes the chunks.

Blob layout for job J: `jobs/J/input.jsonl` (deleted when the job ends), `jobs/J/index.json`
(byte offset of each chunk's first line, written by chunking), `jobs/J/chunks/NNNNNN.jsonl`
(one per recorded chunk, until the outputs are assembled; `NNNNNN.A.jsonl`, attempt A,
with the Celery runner) and `jobs/J/outputs/NNNNN.jsonl`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from batchvision.jobs.blobs import Blobs
from batchvision.jobs.store import JobView
from batchvision.jobs.validate import JsonlLimits, validate_stream


def input_key(job_id: str) -> str:
    return f"jobs/{job_id}/input.jsonl"


def index_key(job_id: str) -> str:
    return f"jobs/{job_id}/index.json"


def chunk_key(job_id: str, index: int, attempt: int | None = None) -> str:
    if attempt is None:
        return f"jobs/{job_id}/chunks/{index:06d}.jsonl"
    return f"jobs/{job_id}/chunks/{index:06d}.{attempt}.jsonl"


def output_key(job_id: str, index: int) -> str:
    return f"jobs/{job_id}/outputs/{index:05d}.jsonl"


@dataclass(frozen=True)
class ChunkSpec:
    index: int
    first_line: int
    lines: int
    offset: int  # byte offset of the first line in the input blob


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
