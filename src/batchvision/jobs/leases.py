"""Chunk leases and the dispatcher's leadership: the database side of the Celery job runner.

A chunk sent to the workers has one lease row until it is recorded in the ledger (or its job
ends). The dispatcher inserts it (`queued`) and sends a task naming the chunk and the attempt;
the worker that receives the task claims that attempt (`running`) and renews the lease while it
works (`stopping` once it saw its job's end decided and stopped the chunk's lines); it deletes
the lease once the chunk is recorded or the job's end is decided — never
otherwise, so every chunk of a running job is at every moment recorded, leased, or about to be
dispatched. A lease that expires (its message lost, its worker killed) is sent again by the
reaper as the next attempt, and a task of an older attempt finds nothing to claim.

`LeaderLease` elects one dispatcher among the API replicas through the same database: a row per
role naming the holder until an expiry the holder keeps pushing forward; anyone may take a row
that has lapsed. Two holders at once (a holder paused past its expiry) cost duplicate work at
worst: a lease insert for a chunk already leased fails, and the ledger records a chunk once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import ColumnElement, Engine, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from batchvision.core.db import utcnow
from batchvision.jobs.tables import ChunkLease, JobChunk, Leader, LeaseState


@dataclass(frozen=True)
class Lease:
    job_id: str
    index: int
    attempt: int


class LeaseStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def dispatch(self, job_id: str, indexes: Iterable[int], ttl_s: float) -> list[Lease]:
        """Lease the chunks as queued, first attempt; those already leased are left out."""
        expires = utcnow() + dt.timedelta(seconds=ttl_s)
        leased = []
        for index in indexes:
            try:
                with self.engine.begin() as connection:
                    connection.execute(
                        insert(ChunkLease).values(
                            job_id=job_id,
                            index=index,
                            attempt=1,
                            state=LeaseState.QUEUED,
                            expires_at=expires,
                        )
                    )
            except IntegrityError:
                continue
            leased.append(Lease(job_id, index, 1))
        return leased

    def claim(self, lease: Lease, ttl_s: float, holder: str) -> bool:
        """A worker (`holder`, e.g. host:pid) takes the attempt it was sent: queued, or lapsed
        (its worker died)."""
        now = utcnow()
        with self.engine.begin() as connection:
            result = connection.execute(
                update(ChunkLease)
                .where(
                    *_is(lease),
                    or_(ChunkLease.state == LeaseState.QUEUED, ChunkLease.expires_at < now),
                )
                .values(
                    state=LeaseState.RUNNING,
                    expires_at=now + dt.timedelta(seconds=ttl_s),
                    holder=holder,
                )
            )
        return bool(result.rowcount == 1)

    def renew(self, lease: Lease, ttl_s: float, holder: str) -> bool:
        """Push the running lease's expiry forward; False once it was taken from this worker:
        sent again (the next attempt), or its attempt claimed by another worker after it lapsed
        (a redelivery of the same message), which only the holder tells apart."""
        with self.engine.begin() as connection:
            result = connection.execute(
                update(ChunkLease)
                .where(*_is(lease), ChunkLease.holder == holder)
                .values(expires_at=utcnow() + dt.timedelta(seconds=ttl_s))
            )
        return bool(result.rowcount == 1)

    def stopping(self, lease: Lease, holder: str) -> None:
        """The holder saw its job's end decided and stopped the chunk's lines."""
        with self.engine.begin() as connection:
            connection.execute(
                update(ChunkLease)
                .where(*_is(lease), ChunkLease.holder == holder)
                .values(state=LeaseState.STOPPING)
            )

    def release(self, lease: Lease) -> None:
        with self.engine.begin() as connection:
            connection.execute(delete(ChunkLease).where(*_is(lease)))

    def expired(self, now: dt.datetime | None = None) -> list[Lease]:
        moment = now or utcnow()
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(ChunkLease.job_id, ChunkLease.index, ChunkLease.attempt).where(
                    ChunkLease.expires_at < moment
                )
            ).all()
        return [Lease(job_id, index, attempt) for job_id, index, attempt in rows]

    def resend(self, lease: Lease, ttl_s: float) -> Lease | None:
        """The expired lease as its next attempt, queued again; None if it changed meanwhile
        (claimed, released) or its chunk is recorded (the lease goes)."""
        with self.engine.begin() as connection:
            recorded = connection.scalar(
                select(func.count())
                .select_from(JobChunk)
                .where(JobChunk.job_id == lease.job_id, JobChunk.index == lease.index)
            )
            if recorded:
                connection.execute(delete(ChunkLease).where(*_is(lease)))
                return None
            result = connection.execute(
                update(ChunkLease)
                .where(*_is(lease), ChunkLease.expires_at < utcnow())
                .values(
                    attempt=lease.attempt + 1,
                    state=LeaseState.QUEUED,
                    expires_at=utcnow() + dt.timedelta(seconds=ttl_s),
                    holder=None,
                )
            )
        if result.rowcount != 1:
            return None
        return Lease(lease.job_id, lease.index, lease.attempt + 1)

    def in_flight(self) -> dict[str, int]:
        """Leased chunks per job."""
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(ChunkLease.job_id, func.count()).group_by(ChunkLease.job_id)
            ).all()
        return {job_id: count for job_id, count in rows}

    def leased_indexes(self, job_id: str) -> set[int]:
        with self.engine.connect() as connection:
            rows = connection.scalars(select(ChunkLease.index).where(ChunkLease.job_id == job_id))
            return set(rows)

    def drain(self, job_id: str) -> int:
        """For a job whose end is decided: drop its queued and lapsed leases (no worker will run
        them); the running leases left, whose workers are stopping and recording."""
        now = utcnow()
        with self.engine.begin() as connection:
            connection.execute(
                delete(ChunkLease).where(
                    ChunkLease.job_id == job_id,
                    or_(ChunkLease.state == LeaseState.QUEUED, ChunkLease.expires_at < now),
                )
            )
            left = connection.scalar(
                select(func.count()).select_from(ChunkLease).where(ChunkLease.job_id == job_id)
            )
        return int(left or 0)


def _is(lease: Lease) -> tuple[ColumnElement[bool], ...]:
    return (
        ChunkLease.job_id == lease.job_id,
        ChunkLease.index == lease.index,
        ChunkLease.attempt == lease.attempt,
    )


class LeaderLease:
    """Leadership of one role (e.g. "dispatcher") for `holder`, renewed by calling `hold`."""

    def __init__(self, engine: Engine, role: str, holder: str, ttl_s: float) -> None:
        self.engine = engine
        self.role = role
        self.holder = holder
        self.ttl = dt.timedelta(seconds=ttl_s)

    def hold(self) -> bool:
        """Take or keep the role; whether this holder has it until now + ttl."""
        now = utcnow()
        with self.engine.begin() as connection:
            result = connection.execute(
                update(Leader)
                .where(
                    Leader.role == self.role,
                    or_(Leader.holder == self.holder, Leader.expires_at < now),
                )
                .values(holder=self.holder, expires_at=now + self.ttl)
            )
            if result.rowcount == 1:
                return True
            exists = connection.scalar(select(Leader.holder).where(Leader.role == self.role))
        if exists is not None:
            return False
        try:
            with self.engine.begin() as connection:
                connection.execute(
                    insert(Leader).values(
                        role=self.role, holder=self.holder, expires_at=now + self.ttl
                    )
                )
        except IntegrityError:
            return False
        return True

    def give_up(self) -> None:
        """Hand the role back at once (a replica closing), so another takes it without waiting."""
        with self.engine.begin() as connection:
            connection.execute(
                delete(Leader).where(Leader.role == self.role, Leader.holder == self.holder)
            )
