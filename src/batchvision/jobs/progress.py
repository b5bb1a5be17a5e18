"""Per-line progress for chunks still running in this process.

The ledger moves a job's counters a chunk at a time (that is what keeps outputs exactly-once).
Between commits, `LiveProgress` counts the lines of running chunks, so a status read moves line
by line. Consistency: a chunk's commit and the removal of its live counts happen under one lock,
and a status read takes the same lock around its database read, so no read ever counts a chunk
twice (committed and live) or loses it. Only the event loop thread writes the counts. A chunk
stopped because its job is ending keeps its counts until it records the lines it finished (that
commit drops them, as for a whole chunk), so a cancel never moves progress backwards; a chunk
cancelled otherwise (the server is closing) or failing is forgotten (its lines will run again),
so progress never counts a line the outputs will not hold.

In a multi-process deployment each worker only knows its own chunks; status then moves a chunk
at a time on other replicas, which is still correct.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from typing import TypeVar

from batchvision.jobs.store import JobView

T = TypeVar("T")


class LiveProgress:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        # job id -> chunk index -> [ok lines, failed lines]
        self._counts: dict[str, dict[int, list[int]]] = {}

    def line_done(self, job_id: str, chunk: int, ok: bool) -> None:
        counts = self._counts.setdefault(job_id, {}).setdefault(chunk, [0, 0])
        counts[0 if ok else 1] += 1

    def commit(self, job_id: str, chunk: int, write: Callable[[], T]) -> T:
        """Run the chunk's ledger commit and drop its live counts as one step for readers."""
        with self._lock:
            try:
                return write()
            finally:
                self._drop(job_id, chunk)

    def forget(self, job_id: str, chunk: int | None = None) -> None:
        """A chunk (or the whole job) that will not be committed by this run."""
        with self._lock:
            if chunk is None:
                self._counts.pop(job_id, None)
            else:
                self._drop(job_id, chunk)

    def read(self, load: Callable[[], JobView]) -> JobView:
        """`load()` (a database read of one job) plus the lines its running chunks finished."""
        with self._lock:
            return self._with_live(load())

    def read_page(self, load: Callable[[], tuple[list[JobView], T]]) -> tuple[list[JobView], T]:
        """`read` for a page of jobs (and whatever else `load` returns with it)."""
        with self._lock:
            jobs, rest = load()
            return [self._with_live(job) for job in jobs], rest

    def _with_live(self, job: JobView) -> JobView:
        chunks = list(self._counts.get(job.id, {}).values())
        if not chunks:
            return job
        return dataclasses.replace(
            job,
            completed_lines=job.completed_lines + sum(c[0] for c in chunks),
            failed_lines=job.failed_lines + sum(c[1] for c in chunks),
        )

    def _drop(self, job_id: str, chunk: int) -> None:
        # The job's dict stays (emptied) until `forget(job_id)` at the job's end: deleting it
        # here could race with `line_done` adding a line of another chunk to the old dict.
        self._counts.get(job_id, {}).pop(chunk, None)
