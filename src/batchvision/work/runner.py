"""The local job runner: drives each job chunking → processing → an end, inside the server.

It owns no state that matters: every decision is read back from the store, so a server that
was killed resumes its unfinished jobs on start (`start`) and finishes them with every line
exactly once (chunks already in the ledger are skipped; a chunk cut off mid-way runs again).

Per job, up to `job_parallel_chunks` chunks run at once; across all jobs, `job_lines_in_flight`
lines (the `ChunkWork.line_slots` semaphore) bound memory whatever the job sizes. The images go
through the same pipeline and dynamic batchers as interactive requests.

A job ends in one place, `_end`: the finished chunks' results are concatenated into output files
of at most `job_output_lines` lines (in line order), the state is committed, the input and the
chunk blobs are deleted, and the callback, if any, is sent. A crash after the commit but before
the deletions leaves blobs that the retention sweep removes with the job.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import Callable
from typing import Any

from batchvision.core.db import utcnow
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
from batchvision.jobs.store import JobView
from batchvision.jobs.uploads import UploadStore
from batchvision.jobs.validate import BatchValidationError, JsonlLimits
from batchvision.work.chunks import ChunkWork, process_chunk

log = logging.getLogger(__name__)

TEMP_BLOB_AGE_S = 3600.0
CANCEL_POLL_S = 1.0

# The final status body a callback carries, built by the API layer (it knows the URL shapes).
StatusBody = Callable[[JobView], dict[str, Any]]


class JobEnded(Exception):
    """Raised inside a job's run to end it early (cancel, timeout, credits)."""

    def __init__(self, state: str, code: str | None = None, message: str | None = None) -> None:
        super().__init__(message or state)
        self.state, self.code, self.message = state, code, message


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

    async def end_now(self, job_id: str, code: str, message: str) -> None:
        """Fail a job that never started (its file was refused before chunking)."""
        await self._end(job_id, "failed", code, message)

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
        if job is None or job.state not in ("chunking", "processing"):
            return
        deadline = job.created_at + dt.timedelta(seconds=self.settings.job_max_seconds)
        try:
            async with asyncio.timeout(max(0.0, (deadline - utcnow()).total_seconds())):
                if job.state == "chunking":
                    job = await self._chunk(job)
                await self._process(job)
        except JobEnded as ended:
            await self._end(job_id, ended.state, ended.code, ended.message)
        except TimeoutError:
            message = f"the job ran past its limit of {self.settings.job_max_seconds:g} s"
            await self._end(job_id, "failed", "timeout", message)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("job %s failed", job_id)
            await self._end(job_id, "failed", "processing_failed", "internal processing error")
        else:
            await self._end(job_id, "completed")

    async def _chunk(self, job: JobView) -> JobView:
        """Validate the input and index its chunks: chunking → processing, or the job fails."""
        lines_per_chunk = job.chunk_lines
        key = input_key(job.id)
        try:
            total, offsets = await asyncio.to_thread(
                scan_input, self.blobs, key, self.limits, lines_per_chunk
            )
        except BatchValidationError as exc:
            raise JobEnded("failed", exc.code.value, exc.message) from None
        await asyncio.to_thread(write_index, self.blobs, job.id, lines_per_chunk, offsets)
        await asyncio.to_thread(self.store.start, job.id, input_key=key, total_lines=total)
        started = await asyncio.to_thread(self.store.view, job.id)
        assert started is not None
        return started

    async def _process(self, job: JobView) -> None:
        """Run the chunks not yet in the ledger, `job_parallel_chunks` at a time (a sliding
        window, so nothing here grows with the job), until all are in or the job ends early."""
        done = {c.index for c in await asyncio.to_thread(self.store.done_chunks, job.id)}
        specs = await asyncio.to_thread(chunk_specs, self.blobs, job)
        pending = iter([spec for spec in specs if spec.index not in done])
        running: set[asyncio.Task[None]] = set()
        watcher = asyncio.create_task(self._cancel_requested(job.id))
        try:
            while True:
                while len(running) < self.settings.job_parallel_chunks:
                    spec = next(pending, None)
                    if spec is None:
                        break
                    running.add(asyncio.create_task(self._one_chunk(job, spec)))
                if not running:
                    return
                finished, running = await asyncio.wait(
                    running | {watcher}, return_when=asyncio.FIRST_COMPLETED
                )
                if watcher in finished:
                    raise JobEnded("cancelled", None, "cancelled by the client")
                running.discard(watcher)
                for task in finished:
                    task.result()  # the first failure (JobEnded or a bug) ends the job
        finally:
            for task in (*running, watcher):
                task.cancel()
            await asyncio.gather(*running, watcher, return_exceptions=True)

    async def _one_chunk(self, job: JobView, spec: ChunkSpec) -> None:
        if not await asyncio.to_thread(self.store.has_credits, job.id):
            raise JobEnded("failed", "insufficient_credits", "the key ran out of credits")
        await process_chunk(self.work, job, spec)

    async def _cancel_requested(self, job_id: str) -> None:
        """Return when a cancel arrives: in this process at once, from another replica (the
        store's flag) within a second."""
        event = self._cancels.get(job_id) or asyncio.Event()
        while not event.is_set():
            try:
                async with asyncio.timeout(CANCEL_POLL_S):
                    await event.wait()
            except TimeoutError:
                if await asyncio.to_thread(self.store.cancel_requested, job_id):
                    return

    # --- the end -----------------------------------------------------------------------------

    async def _end(
        self, job_id: str, state: str, code: str | None = None, message: str | None = None
    ) -> None:
        self.work.progress.forget(job_id)  # nothing runs any more; the ledger holds the rest
        outputs = await asyncio.to_thread(self._assemble_outputs, job_id)
        changed = await asyncio.to_thread(
            self.store.finish,
            job_id,
            state,
            error_code=code,
            error_message=message,
            output_files=outputs,
        )
        if not changed:
            return
        await asyncio.to_thread(self._delete_work_files, job_id)
        log.info("job %s ended %s%s", job_id, state, f" ({code})" if code else "")
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
        if job is None or job.callback_state != "pending" or not job.callback_url:
            return
        body = json.dumps(self.status_body(job)).encode()
        secret = (job.callback_secret or "").encode()
        delivered = await deliver_callback(job.callback_url, body, secret, self.callback_policy)
        state = "delivered" if delivered else "failed"
        await asyncio.to_thread(self.store.set_callback_state, job_id, state)

    # --- retention ---------------------------------------------------------------------------

    async def _sweep_forever(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.sweep)
            except Exception:
                log.exception("retention sweep failed; trying again later")
            await asyncio.sleep(self.settings.job_sweep_interval_s)

    def sweep(self, now: dt.datetime | None = None) -> tuple[int, int]:
        """Purge results past retention and uploads left unfinished; (jobs, uploads) swept."""
        moment = now or utcnow()
        jobs = self.store.expired(moment)
        for job in jobs:
            self.blobs.delete_prefix(f"jobs/{job.id}/")
            self.store.mark_expired(job.id)
        uploads = self.uploads.expired(moment)
        for upload in uploads:
            if self.uploads.close(upload.id, "expired"):
                self.blobs.delete_prefix(f"uploads/{upload.id}/")
        self.blobs.sweep_temp(TEMP_BLOB_AGE_S)
        return len(jobs), len(uploads)
