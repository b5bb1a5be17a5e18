"""The job store: jobs and their chunk ledger, always read through the caller's tenant scope.

Reads that a client triggers take a `Principal` and go through `owned_by` / `get_owned`, so
another key's job is "not found". The runner's writes (`record_chunk`, `finish`) take a job id:
they act for the system, never for a client.

`record_chunk` is the exactly-once point: a chunk's results blob is written first (atomically),
then the ledger row is inserted; only the insert that wins moves the job's counters. A chunk that
is delivered twice (a retried worker, a restart after kill -9) finds its row and changes nothing.
A row may hold fewer lines than its chunk has (a chunk stopped because its job was ending records
the lines it finished); that only happens once `decide_end` has been written, so those lines'
chunk never runs again.

A job ends in three writes (the runner's `_end`): `decide_end` (how it ends: the first decision
wins, the state stays active), `set_outputs` (its result files are assembled) and `finish` (the
decided state becomes the state). What the runner does between them — assembling the outputs,
deleting the input and chunk blobs — can be redone after a crash from what they recorded, and a
client never sees a final state before the job's work files are gone.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import Engine, and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from batchvision.accounts.keys import usage_upsert
from batchvision.accounts.scoping import Principal, get_owned, owned_by
from batchvision.accounts.tables import ApiKey
from batchvision.core import metrics
from batchvision.core.db import utcnow
from batchvision.core.errors import BatchVisionError, ErrorCode
from batchvision.jobs.tables import CallbackState, Job, JobChunk, JobState

ACTIVE_STATES = frozenset({JobState.CHUNKING, JobState.PROCESSING})
FINAL_STATES = frozenset(
    {JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED, JobState.EXPIRED}
)
# The states a job ends in; `expired` comes later, from the retention sweep.
END_STATES = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED})


@dataclass(frozen=True)
class ChunkResult:
    index: int
    first_line: int
    lines: int
    ok_lines: int
    failed_lines: int
    images: int
    result_key: str
    invalid_lines: int = 0  # lines refused for what they say (see work/chunks.py)
    credits: int = 0  # what its lines cost: images and vision-language calls (work/chunks.py)
    input_tokens: int = 0  # as the vision-language backends reported them
    output_tokens: int = 0
    videos: int = 0  # videos its lines analysed (their frames are not counted as images)


@dataclass(frozen=True)
class FinishedLine:
    """When one line of a chunk finished, and what it cost."""

    at: dt.datetime
    credits: int


class _TooLate(Exception):
    """A chunk recorded after its job's outputs were assembled: rolled back, never billed."""


class Interruption(StrEnum):
    CANCEL = "cancel"
    KEY_REVOKED = "key_revoked"


def _billable_credits(
    credits: int, finished: Sequence[FinishedLine] | None, revoked_at: dt.datetime | None
) -> int:
    """The chunk's credits to bill: all of them, or for a revoked key those of the lines that
    finished before the revoke (none when the chunk brings no line times)."""
    if revoked_at is None:
        return credits
    return sum(line.credits for line in finished or () if line.at < revoked_at)


def invalid_cursor() -> BatchVisionError:
    """One answer for every cursor a listing did not hand out, so it reveals no other job."""
    return BatchVisionError(
        ErrorCode.INVALID_REQUEST,
        "cursor is not valid: pass the next_cursor of an earlier page, or no cursor for the first",
    )


def new_job_id() -> str:
    return secrets.token_hex(16)


def _aware(moment: dt.datetime | None) -> dt.datetime | None:
    # SQLite hands back naive datetimes; every stored time is UTC.
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class JobView:
    """A detached, read-only copy of a job row (safe to use after the session closes)."""

    id: str
    owner_key_id: int | None
    surface: str  # a plain string owned by the surface's folder (see work/surface.py)
    state: JobState
    error_code: ErrorCode | None
    error_message: str | None
    input_key: str | None
    total_lines: int
    completed_lines: int
    failed_lines: int
    images: int
    input_tokens: int  # as the vision-language backends reported them
    output_tokens: int
    chunk_lines: int
    cancel_requested: bool
    callback_url: str | None
    callback_secret: str | None
    callback_state: CallbackState | None
    output_files: int
    retention_days: int
    created_at: dt.datetime
    completed_at: dt.datetime | None
    expires_at: dt.datetime | None
    end_state: JobState | None = None  # decided, not yet the state (see the module docstring)
    outputs_assembled: bool = False  # its result files are assembled: no chunk records since
    uncharged_credits: int = 0  # finished work's cost beyond the owner's balance
    videos: int = 0  # analysed by its video lines (their frames are not counted in `images`)

    @classmethod
    def of(cls, row: Job) -> JobView:
        values: dict[str, Any] = {name: getattr(row, name) for name in cls.__dataclass_fields__}
        for name in ("created_at", "completed_at", "expires_at"):
            values[name] = _aware(values[name])
        return cls(**values)

    @property
    def chunks(self) -> int:
        return -(-self.total_lines // self.chunk_lines) if self.total_lines else 0


class JobStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(
        self,
        principal: Principal,
        *,
        surface: str,
        chunk_lines: int,
        callback_url: str | None = None,
        callback_secret: str | None = None,
        retention_days: int = 7,
        job_id: str | None = None,
    ) -> JobView:
        row = Job(
            id=job_id or new_job_id(),
            owner_key_id=principal.key_id,
            surface=surface,
            state=JobState.CHUNKING,
            chunk_lines=chunk_lines,
            callback_url=callback_url,
            callback_secret=callback_secret,
            retention_days=retention_days,
            output_files=0,
            outputs_assembled=False,
            created_at=utcnow(),
            total_lines=0,
            completed_lines=0,
            failed_lines=0,
            images=0,
            input_tokens=0,
            output_tokens=0,
            videos=0,
            cancel_requested=False,
        )
        with Session(self.engine) as session, session.begin():
            session.add(row)
            session.flush()
            return JobView.of(row)

    def get(self, principal: Principal, job_id: str) -> JobView:
        with Session(self.engine) as session:
            return JobView.of(get_owned(session, Job, job_id, principal, kind="job"))

    def page(
        self,
        principal: Principal,
        *,
        limit: int = 50,
        cursor: str | None = None,
        surface: str | None = None,
    ) -> tuple[list[JobView], str | None]:
        """Newest first. The cursor is the last job id of the previous page (keyset paging on
        (created_at, id), so pages stay stable while jobs are added). A cursor that is no job
        of this listing (unknown, another key's, another surface's) is `invalid_cursor`."""
        query = select(Job).where(owned_by(principal, Job.owner_key_id))
        if surface is not None:
            query = query.where(Job.surface == surface)
        with Session(self.engine) as session:
            if cursor is not None:
                # Only what could be an id reaches the database (PostgreSQL refuses a NUL).
                last = session.get(Job, cursor) if cursor.isascii() and cursor.isalnum() else None
                if last is None or not principal.owns(last.owner_key_id):
                    raise invalid_cursor()
                if surface is not None and last.surface != surface:
                    raise invalid_cursor()
                query = query.where(
                    or_(
                        Job.created_at < last.created_at,
                        and_(Job.created_at == last.created_at, Job.id < last.id),
                    )
                )
            rows = session.scalars(
                query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1)
            ).all()
            page = [JobView.of(r) for r in rows[:limit]]
        return page, (page[-1].id if len(rows) > limit else None)

    def start(self, job_id: str, *, input_key: str, total_lines: int) -> None:
        """Validation passed: the job moves from chunking to processing."""
        with self.engine.begin() as connection:
            connection.execute(
                update(Job)
                .where(Job.id == job_id, Job.state == JobState.CHUNKING)
                .values(state=JobState.PROCESSING, input_key=input_key, total_lines=total_lines)
            )

    def record_chunk(
        self,
        job_id: str,
        chunk: ChunkResult,
        *,
        finished: Sequence[FinishedLine] | None = None,
    ) -> bool:
        """Insert the ledger row, move the counters and bill the owner `chunk.credits`, once,
        in one commit.
        `finished`: when each of the chunk's lines finished, so that a key revoked meanwhile is
        billed only for what finished before its revoke (without it, for nothing).
        False if the chunk was already recorded (a redelivery: nothing changes), or comes too
        late, its job's results already assembled (a worker that lost its lease: see
        work/dispatch.py)."""
        try:
            with Session(self.engine) as session, session.begin():
                session.add(JobChunk(job_id=job_id, completed_at=utcnow(), **chunk.__dict__))
                session.flush()
                moved = session.connection().execute(
                    update(Job)
                    .where(
                        Job.id == job_id,
                        Job.state.in_(ACTIVE_STATES),
                        Job.outputs_assembled.is_(False),
                    )
                    .values(
                        completed_lines=Job.completed_lines + chunk.ok_lines,
                        failed_lines=Job.failed_lines + chunk.failed_lines,
                        images=Job.images + chunk.images,
                        input_tokens=Job.input_tokens + chunk.input_tokens,
                        output_tokens=Job.output_tokens + chunk.output_tokens,
                        videos=Job.videos + chunk.videos,
                    )
                )
                if moved.rowcount != 1:
                    raise _TooLate
                self._bill_owner(session, job_id, chunk, finished)
        except (IntegrityError, _TooLate):
            return False
        metrics.JOB_LINES.labels(status="ok").inc(chunk.ok_lines)
        metrics.JOB_LINES.labels(status="error").inc(chunk.failed_lines)
        return True

    def _bill_owner(
        self,
        session: Session,
        job_id: str,
        chunk: ChunkResult,
        finished: Sequence[FinishedLine] | None,
    ) -> None:
        owner = session.scalar(select(Job.owner_key_id).where(Job.id == job_id))
        if owner is None:
            return
        uncharged = self._bill(session, owner, chunk, finished)
        if uncharged:
            session.execute(
                update(Job)
                .where(Job.id == job_id)
                .values(uncharged_credits=Job.uncharged_credits + uncharged)
            )

    def _bill(
        self,
        session: Session,
        key_id: int,
        chunk: ChunkResult,
        finished: Sequence[FinishedLine] | None,
    ) -> int:
        """Take the chunk's credits and record, in the usage ledger, the credits really taken;
        return the uncharged rest.

        Work already done is billed even when the balance ran short meanwhile: the balance stops
        at zero, the rest of the cost is recorded as `uncharged_credits` (in the usage ledger
        and on the job, never taken) and the runner stops taking chunks (see `owner_refusal`).
        The key's row is read, then written, inside the transaction that already wrote the chunk
        row: SQLite holds its one write lock by then, PostgreSQL locks the row (FOR UPDATE), so
        no reservation slips in between."""
        key = session.execute(
            select(ApiKey.credits, ApiKey.revoked_at).where(ApiKey.id == key_id).with_for_update()
        ).one_or_none()
        if key is None:
            return 0
        cost = _billable_credits(chunk.credits, finished, _aware(key.revoked_at))
        taken = cost if key.credits is None else min(cost, key.credits)
        if taken:
            session.execute(
                update(ApiKey)
                .where(ApiKey.id == key_id, ApiKey.credits.is_not(None))
                .values(credits=ApiKey.credits - taken)
            )
        metrics.CREDITS_CHARGED.labels(source="job").inc(taken)
        dialect = self.engine.dialect.name
        # As on sync requests, a video counts as one item in the usage ledger's `images`.
        items = chunk.images + chunk.videos
        requests = 1 if items else 0
        usage = usage_upsert(dialect, key_id, requests, items, taken, cost - taken)
        session.execute(usage)
        return cost - taken

    def owner_refusal(self, job_id: str) -> ErrorCode | None:
        """Why the job's owner may run no more of it: `unauthorized` once its key is revoked,
        `insufficient_credits` once its balance is 0; None while it may (unlimited keys and
        anonymous jobs always)."""
        with Session(self.engine) as session:
            key = session.execute(
                select(ApiKey.credits, ApiKey.revoked_at)
                .join(Job, Job.owner_key_id == ApiKey.id)
                .where(Job.id == job_id)
            ).one_or_none()
        if key is None:
            return None
        if key.revoked_at is not None:
            return ErrorCode.UNAUTHORIZED
        if key.credits is not None and key.credits <= 0:
            return ErrorCode.INSUFFICIENT_CREDITS
        return None

    def done_chunks(self, job_id: str) -> list[ChunkResult]:
        with Session(self.engine) as session:
            rows = session.scalars(
                select(JobChunk).where(JobChunk.job_id == job_id).order_by(JobChunk.index)
            )
            return [
                ChunkResult(
                    r.index,
                    r.first_line,
                    r.lines,
                    r.ok_lines,
                    r.failed_lines,
                    r.images,
                    r.result_key,
                    r.invalid_lines,
                    r.credits,
                    r.input_tokens,
                    r.output_tokens,
                    r.videos,
                )
                for r in rows
            ]

    def recorded_counts(self) -> dict[str, int]:
        """Chunks in the ledger per active job (the dispatcher's view of what is done)."""
        with Session(self.engine) as session:
            rows = session.execute(
                select(JobChunk.job_id, func.count())
                .join(Job, Job.id == JobChunk.job_id)
                .where(Job.state.in_(ACTIVE_STATES))
                .group_by(JobChunk.job_id)
            ).all()
        return {job_id: count for job_id, count in rows}

    def is_recorded(self, job_id: str, index: int) -> bool:
        with Session(self.engine) as session:
            return session.get(JobChunk, (job_id, index)) is not None

    def request_cancel(self, principal: Principal, job_id: str) -> JobView:
        """Flag an active job for cancelling; too late (nothing changes) once its end is decided."""
        with Session(self.engine) as session, session.begin():
            row = get_owned(session, Job, job_id, principal, kind="job")
            if row.state in ACTIVE_STATES and row.end_state is None:
                row.cancel_requested = True
            return JobView.of(row)

    def decide_end(
        self,
        job_id: str,
        state: JobState,
        *,
        error_code: ErrorCode | None = None,
        error_message: str | None = None,
    ) -> JobView | None:
        """Record how an active job ends; the first decision wins (a later one changes nothing).
        The job, with its decision in `end_state`, or None if it is no longer active."""
        if state not in END_STATES:
            raise ValueError(f"{state} is not a state a job ends in")
        with Session(self.engine) as session, session.begin():
            session.execute(
                update(Job)
                .where(Job.id == job_id, Job.state.in_(ACTIVE_STATES), Job.end_state.is_(None))
                .values(end_state=state, error_code=error_code, error_message=error_message)
            )
            row = session.get(Job, job_id)
            if row is None or row.state not in ACTIVE_STATES:
                return None
            return JobView.of(row)

    def set_outputs(self, job_id: str, output_files: int) -> None:
        """The ending job's result files are assembled (its chunk blobs may go now)."""
        with self.engine.begin() as connection:
            connection.execute(
                update(Job)
                .where(Job.id == job_id, Job.end_state.is_not(None))
                .values(output_files=output_files, outputs_assembled=True)
            )

    def finish(self, job_id: str) -> bool:
        """The decided end becomes the job's state; False (nothing changed) if the job was already
        final or has no decision. A job with a callback URL gets callback_state 'pending' in the
        same commit, so a crash before delivery is retried on start."""
        now = utcnow()
        with self.engine.begin() as connection:
            row = connection.execute(
                select(Job.retention_days, Job.callback_url, Job.end_state).where(Job.id == job_id)
            ).one_or_none()
            if row is None or row.end_state is None:
                return False
            result = connection.execute(
                update(Job)
                .where(Job.id == job_id, Job.state.in_(ACTIVE_STATES))
                .values(
                    state=row.end_state,
                    completed_at=now,
                    expires_at=now + dt.timedelta(days=row.retention_days),
                    callback_state=CallbackState.PENDING if row.callback_url else None,
                )
            )
            return bool(result.rowcount == 1)

    def set_callback_state(self, job_id: str, state: CallbackState) -> None:
        with self.engine.begin() as connection:
            connection.execute(update(Job).where(Job.id == job_id).values(callback_state=state))

    def pending_callbacks(self) -> list[JobView]:
        with Session(self.engine) as session:
            rows = session.scalars(select(Job).where(Job.callback_state == CallbackState.PENDING))
            return [JobView.of(r) for r in rows]

    def view(self, job_id: str) -> JobView | None:
        """The runner's unscoped read (it acts for the system, not for a client)."""
        with Session(self.engine) as session:
            row = session.get(Job, job_id)
            return None if row is None else JobView.of(row)

    def interruption(self, job_id: str) -> Interruption | None:
        """What stops the running job from elsewhere: a cancel (its flag, set by any replica),
        its owner's key revoked; None while neither. One query, polled by the runner."""
        with Session(self.engine) as session:
            row = session.execute(
                select(Job.cancel_requested, ApiKey.revoked_at)
                .outerjoin(ApiKey, ApiKey.id == Job.owner_key_id)
                .where(Job.id == job_id)
            ).one_or_none()
        if row is None:
            return None
        if row.cancel_requested:
            return Interruption.CANCEL
        return Interruption.KEY_REVOKED if row.revoked_at is not None else None

    def count_by_state(self) -> dict[JobState, int]:
        """How many jobs are in each state, every state listed (for /metrics: one grouped
        count over the indexed state column, cheap enough to run at every scrape)."""
        with Session(self.engine) as session:
            rows = session.execute(select(Job.state, func.count()).group_by(Job.state)).all()
        counts = dict.fromkeys(JobState, 0)
        counts.update({JobState(state): count for state, count in rows})
        return counts

    def unfinished(self) -> list[JobView]:
        """Jobs a restarted server must resume."""
        with Session(self.engine) as session:
            rows = session.scalars(select(Job).where(Job.state.in_(ACTIVE_STATES)))
            return [JobView.of(r) for r in rows]

    def expired(self, now: dt.datetime) -> list[JobView]:
        """Finished jobs past their retention: the sweeper deletes their results."""
        with Session(self.engine) as session:
            rows = session.scalars(
                select(Job).where(Job.state.in_(END_STATES), Job.expires_at <= now)
            )
            return [JobView.of(r) for r in rows]

    def mark_expired(self, job_id: str) -> None:
        with self.engine.begin() as connection:
            connection.execute(
                update(Job).where(Job.id == job_id).values(state=JobState.EXPIRED, output_files=0)
            )
