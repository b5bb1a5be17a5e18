"""What every job runner shares: how a job is chunked, how it ends, callbacks and retention.

The local runner (`work/runner.py`) and the Celery dispatcher (`work/dispatch.py`) differ in who
runs the chunks; they chunk a job, decide and carry out its end the same way, here.

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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from batchvision.core.db import utcnow
from batchvision.core.errors import ErrorCode
from batchvision.core.periodic import every
from batchvision.core.settings import Settings
from batchvision.jobs.blobs import Blobs
from batchvision.jobs.callbacks import CallbackPolicy, deliver_callback
from batchvision.jobs.chunks import index_key, input_key, output_key, scan_input, write_index
from batchvision.jobs.store import JobStore, JobView
from batchvision.jobs.tables import CallbackState, JobState, UploadState
from batchvision.jobs.uploads import UploadStore
from batchvision.jobs.validate import BatchValidationError, JsonlLimits
from batchvision.work.chunks import ChunkWork

log = logging.getLogger(__name__)

TEMP_BLOB_AGE_S = 3600.0
NO_VALID_LINES = "no valid lines in file: every line was refused (the result lines say why)"

# The final status body a callback carries, built by the API layer (it knows the URL shapes).
StatusBody = Callable[[JobView], dict[str, Any]]


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


def decide(store: JobStore, job_id: str, ending: Ending) -> JobView | None:
    """Record how the job ends (`JobStore.decide_end`: the first decision wins)."""
    return store.decide_end(
        job_id, ending.state, error_code=ending.code, error_message=ending.message
    )


class JobEnded(Exception):
    """Raised inside a job's run to end it early (cancel, timeout, credits)."""

    def __init__(self, ending: Ending) -> None:
        super().__init__(ending.message or ending.state)
        self.ending = ending


class JobLifecycle:
    """The steps of a job that do not depend on where its chunks run."""

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
        self._background: set[asyncio.Task[None]] = set()

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _stop_background(self) -> None:
        tasks = list(self._background)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def end_now(self, job_id: str, code: ErrorCode, message: str) -> None:
        """Fail a job that never started (its file was refused before chunking)."""
        await self._end(job_id, Ending(JobState.FAILED, code, message))

    async def _resume_callbacks(self) -> None:
        for job in await asyncio.to_thread(self.store.pending_callbacks):
            self._spawn(self._callback(job.id))

    # --- chunking ----------------------------------------------------------------------------

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

    def _completion(self, job: JobView) -> Ending:
        """Every chunk is in: completed, or empty_batch where the surface says so."""
        surface = self.work.surfaces[job.surface]
        invalid = sum(chunk.invalid_lines for chunk in self.store.done_chunks(job.id))
        if surface.all_invalid_is_empty_batch and invalid == job.total_lines:
            return Ending(JobState.FAILED, ErrorCode.EMPTY_BATCH, NO_VALID_LINES)
        return Ending(JobState.COMPLETED)

    def _seconds_left(self, job: JobView) -> float:
        deadline = job.created_at + dt.timedelta(seconds=self.settings.job_max_seconds)
        return max(0.0, (deadline - utcnow()).total_seconds())

    def _timeout(self) -> Ending:
        message = f"the job ran past its limit of {self.settings.job_max_seconds:g} s"
        return Ending(JobState.FAILED, ErrorCode.TIMEOUT, message)

    # --- the end -----------------------------------------------------------------------------

    def _decide(self, job_id: str, ending: Ending) -> JobView | None:
        return decide(self.store, job_id, ending)

    async def _end(self, job_id: str, ending: Ending) -> None:
        """Carry out the job's end in the crash-safe order of the module docstring; a decision
        already in the store (a restart, a race) wins over `ending`."""
        job = await asyncio.to_thread(self._decide, job_id, ending)
        if job is None:
            return  # already final
        self.work.progress.forget(job_id)  # nothing runs any more; the ledger holds the rest
        if not job.outputs_assembled:
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
