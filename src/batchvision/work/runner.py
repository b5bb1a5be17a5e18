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

A job ends in one place, `_end`, in steps a crash may interrupt anywhere:

1. `decide_end`: how it ends (state, code, message); the state stays active;
2. the recorded chunks' results are concatenated into output files of at most
   `job_output_lines` lines, in line order, and their number recorded (`set_outputs`);
3. the input, the chunk index and the chunk blobs are deleted;
4. `finish`: the decided state becomes the state. A client that sees a final state therefore
   sees the work files gone (a batch page may promise input files deleted once processing is done);
5. the callback, if any (`pending` in the store from step 4 until it is delivered).

A restarted server finds a still-active job with a decided end and runs `_end` again: outputs
are assembled only if their number was not recorded yet (the chunk blobs are deleted only after
it is), deleting what is already gone does nothing. Whatever a crash leaves under `jobs/J/` is
removed with the rest of the job by the retention sweep, which deletes the whole prefix.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from batchvision.core.db import utcnow
from batchvision.core.errors import ErrorCode
from batchvision.core.periodic import every
from batchvision.core.settings import Settings
from batchvision.jobs.blobs import Blobs
from batchvision.jobs.callbacks import CallbackPolicy, deliver_callback
from batchvision.jobs.chunks import (
    ChunkSpec,
    chunk_specs,
    index_key,
    input_key,
    output_key,
    scan_input,
    write_index,
)
from batchvision.jobs.store import ACTIVE_STATES, ChunkResult, Interruption, JobView
from batchvision.jobs.tables import CallbackState, JobState, UploadState
from batchvision.jobs.uploads import UploadStore
from batchvision.jobs.validate import BatchValidationError, JsonlLimits
from batchvision.work.chunks import ChunkWork, process_chunk

log = logging.getLogger(__name__)

TEMP_BLOB_AGE_S = 3600.0
STORE_POLL_S = 1.0  # how often a running job reads a cancel or a revoke made elsewhere
NO_VALID_LINES = "no valid lines in file: every line was refused (the result lines say why)"

# The final status body a callback carries, built by the API layer (it knows the URL shapes).
StatusBody = Callable[[JobView], dict[str, Any]]

ChunkTasks = dict[asyncio.Task[ChunkResult | None], asyncio.Event]  # each with its stop event


@dataclass(frozen=True)
class Ending:
    """How a job ends: a final state, and for a failure its job-level code and message."""

    state: JobState
    code: ErrorCode | None = None
    message: str | None = None


CANCELLED = Ending(JobState.CANCELLED, None, "cancelled by the client")
BROKEN = Ending(JobState.FAILED, ErrorCode.PROCESSING_FAILED, "internal processing error")
REVOKED = Ending(JobState.FAILED, ErrorCode.UNAUTHORIZED, "the job's API key was revoked")
OUT_OF_CREDITS = Ending(
    JobState.FAILED, ErrorCode.INSUFFICIENT_CREDITS, "the key ran out of credits"
)
# Why the owner may run no more of a job (`JobStore.owner_refusal`) → how the job ends.
REFUSALS = {ErrorCode.UNAUTHORIZED: REVOKED, ErrorCode.INSUFFICIENT_CREDITS: OUT_OF_CREDITS}


class JobEnded(Exception):
    """Raised inside a job's run to end it early (cancel, timeout, credits)."""

    def __init__(self, ending: Ending) -> None:
        super().__init__(ending.message or ending.state)
        self.ending = ending


class JobRunner:
    def __init__(
        self,
        settings: Settings,
        work: ChunkWork,
        uploads: UploadStore,
        status_body: StatusBody,
    ) -> None:
        self.settings = settings
        self.work = work
        self.store = work.store
        self.blobs: Blobs = work.blobs
        self.uploads = uploads
        self.status_body = status_body
        self.limits = JsonlLimits(
            settings.job_max_file_bytes, settings.job_max_lines, settings.job_max_line_bytes
        )
        self.callback_policy = CallbackPolicy(
            attempts=settings.callback_attempts,
            base_delay_s=settings.callback_base_delay_s,
            allow_hosts=frozenset(settings.callback_allow_hosts),
        )
        self._jobs: dict[str, asyncio.Task[None]] = {}
        self._cancels: dict[str, asyncio.Event] = {}
        self._background: set[asyncio.Task[None]] = set()

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Resume unfinished jobs and undelivered callbacks; start the retention sweeper."""
        for job in await asyncio.to_thread(self.store.unfinished):
            self.enqueue(job.id)
        for job in await asyncio.to_thread(self.store.pending_callbacks):
            self._spawn(self._callback(job.id))
        self._spawn(self._sweep_forever())

    async def close(self) -> None:
        """Stop without ending anything: unfinished jobs stay active and resume on start."""
        tasks = [*self._jobs.values(), *self._background]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def enqueue(self, job_id: str) -> None:
        if job_id in self._jobs:
            return
        self._cancels[job_id] = asyncio.Event()
        task = asyncio.create_task(self._run(job_id), name=f"job-{job_id}")
        self._jobs[job_id] = task
        task.add_done_callback(lambda _: self._forget(job_id))

    async def end_now(self, job_id: str, code: ErrorCode, message: str) -> None:
        """Fail a job that never started (its file was refused before chunking)."""
        await self._end(job_id, Ending(JobState.FAILED, code, message))

    def cancel(self, job_id: str) -> None:
        """Wake a running job so it stops promptly (the store already holds the request)."""
        event = self._cancels.get(job_id)
        if event is not None:
            event.set()

    def _forget(self, job_id: str) -> None:
        self._jobs.pop(job_id, None)
        self._cancels.pop(job_id, None)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

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

    def _completion(self, job: JobView) -> Ending:
        """Every chunk is in: completed, or empty_batch where the surface says so."""
        surface = self.work.surfaces[job.surface]
        invalid = sum(chunk.invalid_lines for chunk in self.store.done_chunks(job.id))
        if surface.all_invalid_is_empty_batch and invalid == job.total_lines:
            return Ending(JobState.FAILED, ErrorCode.EMPTY_BATCH, NO_VALID_LINES)
        return Ending(JobState.COMPLETED)

    async def _chunk(self, job: JobView) -> JobView:
        """Validate the input and index its chunks: chunking → processing, or the job fails."""
        key = input_key(job.id)
        try:
            async with asyncio.timeout(self._seconds_left(job)):
                total, offsets = await asyncio.to_thread(
                    scan_input, self.blobs, key, self.limits, job.chunk_lines
                )
        except TimeoutError:
            raise JobEnded(self._timeout()) from None
        except BatchValidationError as exc:
            raise JobEnded(Ending(JobState.FAILED, exc.code, exc.message)) from None
        await asyncio.to_thread(write_index, self.blobs, job.id, job.chunk_lines, offsets)
        await asyncio.to_thread(self.store.start, job.id, input_key=key, total_lines=total)
        started = await asyncio.to_thread(self.store.view, job.id)
        assert started is not None
        return started

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

    def _seconds_left(self, job: JobView) -> float:
        deadline = job.created_at + dt.timedelta(seconds=self.settings.job_max_seconds)
        return max(0.0, (deadline - utcnow()).total_seconds())

    def _timeout(self) -> Ending:
        message = f"the job ran past its limit of {self.settings.job_max_seconds:g} s"
        return Ending(JobState.FAILED, ErrorCode.TIMEOUT, message)

    # --- the end -----------------------------------------------------------------------------

    def _decide(self, job_id: str, ending: Ending) -> JobView | None:
        return self.store.decide_end(
            job_id, ending.state, error_code=ending.code, error_message=ending.message
        )

    async def _end(self, job_id: str, ending: Ending) -> None:
        """Carry out the job's end in the crash-safe order of the module docstring; a decision
        already in the store (a restart, a race) wins over `ending`."""
        job = await asyncio.to_thread(self._decide, job_id, ending)
        if job is None:
            return  # already final
        self.work.progress.forget(job_id)  # nothing runs any more; the ledger holds the rest
        if job.output_files == 0:
            outputs = await asyncio.to_thread(self._assemble_outputs, job_id)
            await asyncio.to_thread(self.store.set_outputs, job_id, outputs)
        await asyncio.to_thread(self._delete_work_files, job_id)
        if await asyncio.to_thread(self.store.finish, job_id):
            code = f" ({job.error_code})" if job.error_code else ""
            log.info("job %s ended %s%s", job_id, job.end_state, code)
            self._spawn(self._callback(job_id))

    def _assemble_outputs(self, job_id: str) -> int:
        """Concatenate the recorded chunks, in order, into files of whole chunks."""
        chunks = self.store.done_chunks(job_id)
        per_file = self.settings.job_output_lines // self.settings.job_chunk_lines
        groups = [chunks[i : i + per_file] for i in range(0, len(chunks), per_file)]
        for number, group in enumerate(groups):
            self.blobs.concat(output_key(job_id, number), [c.result_key for c in group])
        return len(groups)

    def _delete_work_files(self, job_id: str) -> None:
        self.blobs.delete(input_key(job_id))
        self.blobs.delete(index_key(job_id))
        self.blobs.delete_prefix(f"jobs/{job_id}/chunks/")

    async def _callback(self, job_id: str) -> None:
        job = await asyncio.to_thread(self.store.view, job_id)
        if job is None or job.callback_state is not CallbackState.PENDING or not job.callback_url:
            return
        body = json.dumps(self.status_body(job)).encode()
        secret = (job.callback_secret or "").encode()
        delivered = await deliver_callback(job.callback_url, body, secret, self.callback_policy)
        state = CallbackState.DELIVERED if delivered else CallbackState.FAILED
        await asyncio.to_thread(self.store.set_callback_state, job_id, state)

    # --- retention ---------------------------------------------------------------------------

    async def _sweep_forever(self) -> None:
        await every(self.settings.job_sweep_interval_s, self.sweep, "retention sweep")

    def sweep(self, now: dt.datetime | None = None) -> tuple[int, int]:
        """Purge results past retention and uploads left unfinished; (jobs, uploads) swept."""
        moment = now or utcnow()
        jobs = self.store.expired(moment)
        for job in jobs:
            self.blobs.delete_prefix(f"jobs/{job.id}/")
            self.store.mark_expired(job.id)
        uploads = self.uploads.expired(moment)
        for upload in uploads:
            if self.uploads.close(upload.id, UploadState.EXPIRED):
                self.blobs.delete_prefix(f"uploads/{upload.id}/")
        self.blobs.sweep_temp(TEMP_BLOB_AGE_S)
        return len(jobs), len(uploads)
