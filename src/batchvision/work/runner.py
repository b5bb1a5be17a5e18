"""The local job runner: drives each job chunking → processing → an end, inside the server.

It owns no state that matters: every decision is read back from the store, so a server that
was killed resumes its unfinished jobs on start (`start`) and finishes them with every line
exactly once (chunks already in the ledger are skipped; a chunk cut off mid-way runs again).

Per job, up to `job_parallel_chunks` chunks run at once; across all jobs, `job_lines_in_flight`
lines (the `ChunkWork.line_slots` semaphore) bound memory whatever the job sizes. The images go
through the same pipeline and dynamic batchers as interactive requests.

Ending early — a cancel, the job's time limit, the key's credits running out, the key revoked,
a failure in a chunk — the runner first writes how the job ends (`JobStore.decide_end`), then
stops the chunks still running, and each records the lines it finished (see `work/chunks.py`):
the job keeps every line that finished before the end came, progress never goes backwards, and
the bill covers what ran.

A revoked key's jobs end `failed` with `unauthorized` within one chunk: the runner reads the
owner's key before it starts each chunk (a job queued or resumed after the revoke runs no line)
and polls it with the cancel flag every `STORE_POLL_S` while chunks run; the running chunks then
stop as for a cancel and record the lines they finished. Those lines are kept, and billed only
if they finished before the key's `revoked_at` (`JobStore.record_chunk`): no credit is taken
for work done after the revoke.

A job whose every line was invalid ends `failed` with `empty_batch` on a surface that asks for it
(`JobSurface.all_invalid_is_empty_batch`); its result files are kept, each line saying why it
was refused.

How a job ends, and the retention sweep: `work/lifecycle.py`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

from batchvision.core.settings import Settings
from batchvision.jobs.chunks import ChunkSpec, chunk_specs
from batchvision.jobs.store import ACTIVE_STATES, ChunkResult, Interruption, JobView
from batchvision.jobs.tables import JobState
from batchvision.jobs.uploads import UploadStore
from batchvision.work.chunks import ChunkWork, process_chunk
from batchvision.work.lifecycle import (
    BROKEN,
    CANCELLED,
    REFUSALS,
    REVOKED,
    Ending,
    JobEnded,
    JobLifecycle,
    StatusBody,
)

log = logging.getLogger(__name__)

STORE_POLL_S = 1.0  # how often a running job reads a cancel or a revoke made elsewhere

ChunkTasks = dict[asyncio.Task[ChunkResult | None], asyncio.Event]  # each with its stop event


class JobRunner(JobLifecycle):
    """Runs every job's chunks in this process (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        work: ChunkWork,
        uploads: UploadStore,
        status_body: StatusBody,
    ) -> None:
        super().__init__(settings, work, uploads, status_body)
        self._jobs: dict[str, asyncio.Task[None]] = {}
        self._cancels: dict[str, asyncio.Event] = {}

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Resume unfinished jobs and undelivered callbacks; start the retention sweeper."""
        for job in await asyncio.to_thread(self.store.unfinished):
            self.enqueue(job.id)
        await self._resume_callbacks()
        self._spawn(self._sweep_forever())

    async def close(self) -> None:
        """Stop without ending anything: unfinished jobs stay active and resume on start."""
        jobs = list(self._jobs.values())
        for task in jobs:
            task.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)
        await self._stop_background()

    def enqueue(self, job_id: str) -> None:
        if job_id in self._jobs:
            return
        self._cancels[job_id] = asyncio.Event()
        task = asyncio.create_task(self._run(job_id), name=f"job-{job_id}")
        self._jobs[job_id] = task
        task.add_done_callback(lambda _: self._forget(job_id))

    async def cancel(self, job_id: str) -> None:
        """Wake a running job so it stops promptly (the store already holds the request)."""
        event = self._cancels.get(job_id)
        if event is not None:
            event.set()

    def _forget(self, job_id: str) -> None:
        self._jobs.pop(job_id, None)
        self._cancels.pop(job_id, None)

    # --- one job -----------------------------------------------------------------------------

    async def _run(self, job_id: str) -> None:
        job = await asyncio.to_thread(self.store.view, job_id)
        if job is None or job.state not in ACTIVE_STATES:
            return
        if job.end_state is not None:  # decided before a restart: finish it that way
            await self._end(job_id, Ending(job.end_state))
            return
        await self._end(job_id, await self._outcome(job))

    async def _outcome(self, job: JobView) -> Ending:
        """Run the job until it ends; how it ended."""
        try:
            if job.cancel_requested:  # asked before a restart
                return CANCELLED
            if job.state is JobState.CHUNKING:
                job = await self._chunk(job)
            await self._process(job)
        except JobEnded as ended:
            return ended.ending
        except Exception:
            log.exception("job %s failed", job.id)
            return BROKEN
        return await asyncio.to_thread(self._completion, job)

    async def _process(self, job: JobView) -> None:
        """Run the chunks not yet in the ledger, `job_parallel_chunks` at a time (a sliding
        window, so nothing here grows with the job), until all are in or the job ends early:
        then raise JobEnded once the running chunks have recorded what they finished."""
        done = {c.index for c in await asyncio.to_thread(self.store.done_chunks, job.id)}
        specs = await asyncio.to_thread(chunk_specs, self.blobs, job)
        pending = iter([spec for spec in specs if spec.index not in done])
        running: ChunkTasks = {}
        watchers = {
            asyncio.create_task(self._interrupted(job.id)),
            asyncio.create_task(self._deadline(job)),
        }
        try:
            while True:
                self._fill(job, pending, running)
                if not running:
                    return
                finished, _ = await asyncio.wait(
                    {*running, *watchers}, return_when=asyncio.FIRST_COMPLETED
                )
                ending = self._ending_of(job.id, finished, running)
                if ending is not None:
                    await self._stop(job.id, ending, running)
                    raise JobEnded(ending)
        finally:
            for task in (*running, *watchers):
                task.cancel()
            await asyncio.gather(*running, *watchers, return_exceptions=True)

    def _fill(self, job: JobView, pending: Iterator[ChunkSpec], running: ChunkTasks) -> None:
        while len(running) < self.settings.job_parallel_chunks:
            spec = next(pending, None)
            if spec is None:
                return
            stop = asyncio.Event()
            running[asyncio.create_task(self._one_chunk(job, spec, stop))] = stop

    def _ending_of(
        self, job_id: str, finished: set[asyncio.Task[Any]], running: ChunkTasks
    ) -> Ending | None:
        """Whether what just finished ends the job: a watcher firing, a chunk raising."""
        ending = None
        for task in finished:
            if running.pop(task, None) is None:  # a watcher: it returns its Ending
                ending = ending or task.result()
                continue
            error = task.exception()
            if isinstance(error, JobEnded):
                ending = ending or error.ending
            elif error is not None:
                log.error("job %s: a chunk failed", job_id, exc_info=error)
                ending = ending or BROKEN
        return ending

    async def _stop(self, job_id: str, ending: Ending, running: ChunkTasks) -> None:
        """Write how the job ends, then stop its running chunks: each records what it finished."""
        await asyncio.to_thread(self._decide, job_id, ending)
        for task, stop in running.items():
            stop.set()
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        running.clear()

    async def _one_chunk(
        self, job: JobView, spec: ChunkSpec, stop: asyncio.Event
    ) -> ChunkResult | None:
        refusal = await asyncio.to_thread(self.store.owner_refusal, job.id)
        if refusal is not None:
            raise JobEnded(REFUSALS[refusal])
        return await process_chunk(self.work, job, spec, stop)

    async def _interrupted(self, job_id: str) -> Ending:
        """Return when the job must stop: a cancel in this process at once; a cancel from
        another replica or its key revoked (the store) within `STORE_POLL_S`."""
        event = self._cancels.get(job_id) or asyncio.Event()
        while not event.is_set():
            try:
                async with asyncio.timeout(STORE_POLL_S):
                    await event.wait()
            except TimeoutError:
                interruption = await asyncio.to_thread(self.store.interruption, job_id)
                if interruption is Interruption.KEY_REVOKED:
                    return REVOKED
                if interruption is Interruption.CANCEL:
                    break
        return CANCELLED

    async def _deadline(self, job: JobView) -> Ending:
        await asyncio.sleep(self._seconds_left(job))
        return self._timeout()
