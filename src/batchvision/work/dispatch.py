"""The Celery job runner (`job_runner=celery`): API replicas that never run a chunk themselves.

Every replica takes submissions, answers status and cancels from the shared store; one of them,
elected through the database (`LeaderLease`, renewed every tick, taken over once it lapses), is
the *dispatcher*. Each tick (`DISPATCH_TICK_S`) it:

1. chunks the jobs still chunking (validation and the chunk index, as the local runner does);
2. decides the end of jobs that must stop: cancelled elsewhere, past their time limit, their
   key revoked or out of credits; ends a job once its end is decided and no worker still holds
   one of its chunks (its running chunks record what they finished first), or once every chunk
   is in the ledger — the same `_end` as the local runner (`work/lifecycle.py`);
3. leases chunks not yet recorded nor leased and sends one task per chunk: at most
   `job_parallel_chunks` per job, `job_chunks_in_flight` in all, handed out one chunk per key in
   turn (`fair_share`), so one huge job, or one key's many jobs, cannot starve the others;
4. reaps: a lease that expired (its message lost with a broker restart, its worker killed) is
   sent again as the next attempt (`jobs/leases.py`).

A cancel is decided by the replica that receives it, at once; workers read the decision between
lines (`work/worker.py`) and stop within `worker.STOP_POLL_S`. What a dispatcher knows beyond the
store (which chunks it has yet to send) is rebuilt from the ledger and the leases whenever it
becomes the dispatcher, so a replica killed with kill -9 loses nothing: another takes over once
its leadership lapses (`LEADER_TTL_S`).

Per-line progress: a running chunk's lines are counted in its worker, not here, so with this
runner a job's progress moves a chunk at a time (the ledger's counts).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections import deque
from collections.abc import Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from batchvision.core.periodic import every
from batchvision.core.settings import Settings
from batchvision.jobs.leases import LeaderLease, Lease, LeaseStore
from batchvision.jobs.store import JobView
from batchvision.jobs.tables import JobState
from batchvision.jobs.uploads import UploadStore
from batchvision.work.broker import celery_app, send_chunk
from batchvision.work.chunks import ChunkWork
from batchvision.work.lifecycle import (
    CANCELLED,
    REFUSALS,
    Ending,
    JobEnded,
    JobLifecycle,
    StatusBody,
)

if TYPE_CHECKING:
    from celery import Celery

log = logging.getLogger(__name__)

DISPATCH_TICK_S = 0.2
LEADER_TTL_S = 10.0
ROLE = "dispatcher"


def fair_share(jobs: Sequence[JobView], room: Mapping[str, int], capacity: int) -> dict[str, int]:
    """How many chunks to send per job: one per key in turn (keys in the order of their oldest
    job, each key's jobs oldest first), each job up to its `room`, `capacity` in all."""
    by_key: dict[int | None, deque[JobView]] = {}
    for job in sorted(jobs, key=lambda j: (j.created_at, j.id)):
        if room.get(job.id, 0) > 0:
            by_key.setdefault(job.owner_key_id, deque()).append(job)
    left = dict(room)
    picks: dict[str, int] = {}
    while capacity > 0 and by_key:
        for key in list(by_key):
            queue = by_key[key]
            job = queue[0]
            picks[job.id] = picks.get(job.id, 0) + 1
            left[job.id] -= 1
            capacity -= 1
            if left[job.id] == 0:
                queue.popleft()
            if not queue:
                del by_key[key]
            if capacity == 0:
                break
    return picks


class CeleryRunner(JobLifecycle):
    """The job runner of API replicas with `job_runner=celery` (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        work: ChunkWork,
        uploads: UploadStore,
        status_body: StatusBody,
    ) -> None:
        super().__init__(settings, work, uploads, status_body)
        self.app: Celery = celery_app(settings)
        self.leases = LeaseStore(self.store.engine)
        holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.leader = LeaderLease(self.store.engine, ROLE, holder, LEADER_TTL_S)
        self._leading = False
        self._unsent: dict[str, deque[int]] = {}  # per job, chunks to lease, lowest first
        self._busy: dict[str, asyncio.Task[None]] = {}  # jobs being chunked or ended here
        self._wake = asyncio.Event()

    # --- the runner's interface (as the local runner's) ---------------------------------------

    async def start(self) -> None:
        self._spawn(self._dispatch_forever())
        self._spawn(every(self.settings.job_sweep_interval_s, self._sweep_if_leading, "sweep"))

    async def close(self) -> None:
        """Stop dispatching and hand leadership back (another replica takes it at once)."""
        await self._stop_background()
        busy = list(self._busy.values())
        for task in busy:
            task.cancel()
        await asyncio.gather(*busy, return_exceptions=True)
        if self._leading:
            await asyncio.to_thread(self.leader.give_up)
        self.app.close()

    def enqueue(self, job_id: str) -> None:
        """A new job is in the store: the dispatcher, if it is this replica, looks now."""
        self._wake.set()

    async def cancel(self, job_id: str) -> None:
        """Decide the cancel now: workers read it between lines, wherever the chunks run."""
        await asyncio.to_thread(self._decide, job_id, CANCELLED)
        self._wake.set()

    # --- the dispatcher ------------------------------------------------------------------------

    async def _dispatch_forever(self) -> None:
        while True:
            try:
                await self._tick()
            except Exception:  # a database or broker away: try again next tick
                log.exception("job dispatch failed; retrying")
            self._wake.clear()
            try:
                async with asyncio.timeout(DISPATCH_TICK_S):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _tick(self) -> None:
        leading = await asyncio.to_thread(self.leader.hold)
        if leading != self._leading:
            log.info("job dispatcher: %s", "this replica" if leading else "another replica")
            self._unsent.clear()  # rebuilt from the store while leading
            if leading:
                await self._resume_callbacks()
        self._leading = leading
        if not leading:
            return
        jobs = await asyncio.to_thread(self.store.unfinished)
        in_flight = await asyncio.to_thread(self.leases.in_flight)
        recorded = await asyncio.to_thread(self.store.recorded_counts)
        ready = [job for job in jobs if await self._ready(job, recorded)]
        await self._send(ready, in_flight)
        await self._reap()
        self._forget_ended({job.id for job in jobs})

    async def _ready(self, job: JobView, recorded: dict[str, int]) -> bool:
        """Move the job along; whether it is running chunks (its room decides how many more)."""
        if job.id in self._busy:
            return False
        if job.end_state is not None:
            if await asyncio.to_thread(self.leases.drain, job.id) == 0:
                self._run_busy(job.id, self._end(job.id, Ending(job.end_state)))
            return False
        ending = await asyncio.to_thread(self._must_stop, job)
        if ending is not None:
            await asyncio.to_thread(self._decide, job.id, ending)
            return False
        if job.state is JobState.CHUNKING:
            self._run_busy(job.id, self._chunk_and_wake(job))
            return False
        if recorded.get(job.id, 0) >= job.chunks:
            self._run_busy(job.id, self._complete(job))
            return False
        return True

    def _must_stop(self, job: JobView) -> Ending | None:
        if job.cancel_requested:
            return CANCELLED
        if self._seconds_left(job) <= 0:
            return self._timeout()
        refusal = self.store.owner_refusal(job.id)
        return None if refusal is None else REFUSALS[refusal]

    def _run_busy(self, job_id: str, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._busy[job_id] = task
        task.add_done_callback(lambda _: self._busy.pop(job_id, None))

    async def _chunk_and_wake(self, job: JobView) -> None:
        try:
            await self._chunk(job)
        except JobEnded as ended:
            await self._end(job.id, ended.ending)
        self._wake.set()

    async def _complete(self, job: JobView) -> None:
        await self._end(job.id, await asyncio.to_thread(self._completion, job))

    async def _send(self, ready: list[JobView], in_flight: dict[str, int]) -> None:
        parallel = self.settings.job_parallel_chunks
        unsent_of = {job.id: await self._unsent_of(job) for job in ready}
        # A job's room is also bounded by what it has left to send: one whose chunks are all out
        # would take turns it cannot use, and the last free slots with them, every tick.
        room = {
            job_id: min(parallel - in_flight.get(job_id, 0), len(unsent))
            for job_id, unsent in unsent_of.items()
        }
        capacity = self.settings.job_chunks_in_flight - sum(in_flight.values())
        for job_id, count in fair_share(ready, room, capacity).items():
            unsent = unsent_of[job_id]
            indexes = [unsent.popleft() for _ in range(count)]
            ttl = self.settings.job_queue_lease_s
            leases = await asyncio.to_thread(self.leases.dispatch, job_id, indexes, ttl)
            for position, lease in enumerate(leases):
                if not await self._publish(lease):
                    # The broker is away: this lease and the rest of the batch are released
                    # (sent again next tick), not left to wait job_queue_lease_s.
                    for later in reversed(leases[position:]):
                        await asyncio.to_thread(self.leases.release, later)
                        unsent.appendleft(later.index)
                    return

    async def _unsent_of(self, job: JobView) -> deque[int]:
        """The job's chunks neither recorded nor leased, from the store the first time."""
        if job.id not in self._unsent:
            done = {c.index for c in await asyncio.to_thread(self.store.done_chunks, job.id)}
            leased = await asyncio.to_thread(self.leases.leased_indexes, job.id)
            skip = done | leased
            self._unsent[job.id] = deque(i for i in range(job.chunks) if i not in skip)
        return self._unsent[job.id]

    async def _publish(self, lease: Lease) -> bool:
        """Send the lease's task; whether the broker took it."""
        try:
            await asyncio.to_thread(send_chunk, self.app, lease)
        except Exception as exc:
            log.warning("could not send chunk %s/%d: %s", lease.job_id, lease.index, exc)
            return False
        return True

    async def _reap(self) -> None:
        for lease in await asyncio.to_thread(self.leases.expired):
            again = await asyncio.to_thread(
                self.leases.resend, lease, self.settings.job_queue_lease_s
            )
            if again is not None:
                log.warning("chunk %s/%d: lease expired, sent again", lease.job_id, lease.index)
                if not await self._publish(again):
                    await asyncio.to_thread(self.leases.release, again)
                    self._unsent.pop(lease.job_id, None)  # rebuilt with it next tick
                    return

    def _forget_ended(self, active: set[str]) -> None:
        for job_id in [j for j in self._unsent if j not in active]:
            del self._unsent[job_id]

    def _sweep_if_leading(self) -> None:
        if self._leading:
            self.sweep()
