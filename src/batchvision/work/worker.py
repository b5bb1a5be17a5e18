"""The worker side of the Celery runner: `run_chunk` tasks, run through the server's pipeline.

One worker process holds one pipeline (its models loaded once) on one event loop, in a thread of
its own; Celery's thread pool hands each task to that loop, so the process runs `concurrency`
chunks at once and their lines share the dynamic batchers, as jobs do in the server. A process
per slot (Celery's default prefork pool) would load every model once per slot.

A task (`ChunkWorker.run`) claims its attempt's lease (`jobs/leases.py`) — a stale or duplicate
delivery claims nothing and does nothing — then runs the chunk with `process_chunk`, the function
the local runner uses: results blob, then one ledger insert. While it runs, it renews the lease
every third of `job_lease_s` and reads the job's decided end every `STOP_POLL_S`; once one is
decided (a cancel, the time limit, the key revoked or out of credits, a failure elsewhere) it
stops the chunk, which records the lines it finished, as the local runner's chunks do.

The lease goes once the chunk is recorded or its job's end is decided. Any other way out (the
process closing, the database away) leaves it to lapse, and the dispatcher sends the chunk again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from batchvision.core.settings import Settings
from batchvision.jobs.chunks import ChunkSpec, chunk_specs
from batchvision.jobs.leases import Lease, LeaseStore
from batchvision.jobs.store import ACTIVE_STATES, JobView
from batchvision.work.broker import RUN_CHUNK
from batchvision.work.chunks import ChunkWork, process_chunk
from batchvision.work.lifecycle import BROKEN, REFUSALS, decide

if TYPE_CHECKING:
    from celery import Celery

log = logging.getLogger(__name__)

STOP_POLL_S = 0.1  # a decided end (a cancel) reaches a running chunk within this


class ChunkWorker:
    """Runs chunk tasks on one event loop of its own (see the module docstring)."""

    def __init__(self, settings: Settings, make_work: Callable[[], Awaitable[ChunkWork]]) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="chunks", daemon=True)
        self._thread.start()
        self.work: ChunkWork = self._call(make_work())
        self.leases = LeaseStore(self.work.store.engine)
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self._specs: dict[str, list[ChunkSpec]] = {}  # the chunk index of recent jobs

    def _call(self, coroutine: Awaitable[Any]) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(_awaited(coroutine), self.loop)
        return future.result()

    def run(self, job_id: str, index: int, attempt: int) -> str:
        """The task body, called on a Celery pool thread; what became of the chunk."""
        outcome: str = self._call(self._run(Lease(job_id, index, attempt)))
        return outcome

    def close(self) -> None:
        self._call(self.work.pipeline.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)

    async def _run(self, lease: Lease) -> str:
        ttl = self.settings.job_lease_s
        if not await asyncio.to_thread(self.leases.claim, lease, ttl, self.name):
            return "stale"  # another attempt holds the chunk, or it is done
        settled = False
        try:
            outcome, settled = await self._settle(lease)
        except Exception:
            log.exception("chunk %s/%d failed", lease.job_id, lease.index)
            # As with the local runner, a chunk that raised fails its job.
            await asyncio.to_thread(decide, self.work.store, lease.job_id, BROKEN)
            outcome, settled = "failed", True
        finally:
            if settled:
                await asyncio.to_thread(self.leases.release, lease)
        return outcome

    async def _settle(self, lease: Lease) -> tuple[str, bool]:
        """Run the leased chunk unless there is no need; (what happened, whether it is settled:
        recorded, or its job's end decided)."""
        store = self.work.store
        job = await asyncio.to_thread(store.view, lease.job_id)
        if job is None or _has_ended(job):
            return "ended", True
        if await asyncio.to_thread(store.is_recorded, lease.job_id, lease.index):
            return "recorded", True
        refusal = await asyncio.to_thread(store.owner_refusal, job.id)
        if refusal is not None:
            await asyncio.to_thread(decide, store, job.id, REFUSALS[refusal])
            return "refused", True
        spec = (await asyncio.to_thread(self._spec_list, job))[lease.index]
        return await self._watched(lease, job, spec), True

    async def _watched(self, lease: Lease, job: JobView, spec: ChunkSpec) -> str:
        """The chunk, renewing its lease and stopped once the job's end is decided."""
        stop = asyncio.Event()
        chunk = asyncio.create_task(
            process_chunk(self.work, job, spec, stop, attempt=lease.attempt)
        )
        renew_every = self.settings.job_lease_s / 3
        since_renew = 0.0
        while not chunk.done():
            await asyncio.wait({chunk}, timeout=STOP_POLL_S)
            if chunk.done():
                break
            since_renew += STOP_POLL_S
            if since_renew >= renew_every:
                since_renew = 0.0
                ttl = self.settings.job_lease_s
                await asyncio.to_thread(self.leases.renew, lease, ttl, self.name)
            latest = await asyncio.to_thread(self.work.store.view, job.id)
            if latest is None or _has_ended(latest):
                stop.set()
                chunk.cancel()
                await asyncio.to_thread(self.leases.stopping, lease, self.name)
                await asyncio.wait({chunk})
        result = chunk.result()
        return "stopped" if stop.is_set() else ("recorded" if result is not None else "empty")

    def _spec_list(self, job: JobView) -> list[ChunkSpec]:
        if job.id not in self._specs:
            if len(self._specs) > 64:  # a few jobs at a time: keep the index of recent ones
                self._specs.clear()
            self._specs[job.id] = chunk_specs(self.work.blobs, job)
        return self._specs[job.id]


def _has_ended(job: JobView) -> bool:
    """No longer active, or its end decided: no line of it runs any more."""
    return job.state not in ACTIVE_STATES or job.end_state is not None


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def register_chunk_task(app: Celery, worker: Callable[[], ChunkWorker]) -> None:
    """Register `run_chunk` on `app`; `worker` hands out the process's ChunkWorker."""

    @app.task(name=RUN_CHUNK)  # type: ignore[untyped-decorator]  # acks: the app's config
    def run_chunk(job_id: str, index: int, attempt: int) -> str:
        return worker().run(job_id, index, attempt)
