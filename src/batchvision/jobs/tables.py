"""The jobs schema; changes need an Alembic revision in batchvision/migrations/versions.

The state columns hold the values of the `StrEnum`s below (stored as plain strings, so the
schema and every wire value stay what they were); the stores hand them out as enum members.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Any, Generic, TypeVar

from sqlalchemy import BigInteger, DateTime, Dialect, ForeignKey, Integer, String, Text, false
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from batchvision.core.db import Base, utcnow
from batchvision.core.errors import ErrorCode

OWNER = "api_keys.id"
# A lease's or a role's holder: a hostname (up to 64 characters on Linux), its pid and a token;
# PostgreSQL refuses a value longer than its column where SQLite keeps it.
HOLDER_LENGTH = 255


class JobState(StrEnum):
    """chunking → processing → completed | failed | cancelled; expired once results are purged."""

    CHUNKING = "chunking"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


class CallbackState(StrEnum):
    """A job's webhook: pending (retried on start) → delivered | failed; None without one."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class UploadState(StrEnum):
    """open → completed | aborted | expired, once."""

    OPEN = "open"
    COMPLETED = "completed"
    ABORTED = "aborted"
    EXPIRED = "expired"


E = TypeVar("E", bound=StrEnum)


class EnumText(TypeDecorator[E], Generic[E]):
    """A `String` column holding a `StrEnum`: its value goes in (never its name, whatever the
    driver's own enum rule), a member comes out."""

    impl = String
    cache_ok = True

    def __init__(self, enum: type[E], length: int = 16) -> None:
        super().__init__(length)
        self.enum = enum

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else self.enum(value).value

    def process_result_value(self, value: Any, dialect: Dialect) -> E | None:
        return None if value is None else self.enum(value)


class Upload(Base):
    """An S3-style multipart upload of a JSONL file (a client's `fileId` is this id)."""

    __tablename__ = "uploads"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner_key_id: Mapped[int | None] = mapped_column(ForeignKey(OWNER), index=True)
    upload_id: Mapped[str] = mapped_column(String(64))
    surface: Mapped[str] = mapped_column(String(16))
    state: Mapped[UploadState] = mapped_column(EnumText(UploadState), default=UploadState.OPEN)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    size: Mapped[int | None] = mapped_column(BigInteger, default=None)
    blob_key: Mapped[str | None] = mapped_column(String(512), default=None)


class UploadPart(Base):
    __tablename__ = "upload_parts"

    upload_id: Mapped[str] = mapped_column(
        ForeignKey("uploads.id", ondelete="CASCADE"), primary_key=True
    )
    part_number: Mapped[int] = mapped_column(Integer, primary_key=True)
    etag: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    blob_key: Mapped[str] = mapped_column(String(512))


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner_key_id: Mapped[int | None] = mapped_column(ForeignKey(OWNER), index=True)
    surface: Mapped[str] = mapped_column(String(16))
    state: Mapped[JobState] = mapped_column(
        EnumText(JobState), default=JobState.CHUNKING, index=True
    )
    # How the runner decided the job ends (a final JobState), written before anything it cannot
    # redo (partial chunks recorded, work files deleted) and copied to `state` last; a server that
    # restarts with it set finishes the job that way. See work/runner.py.
    end_state: Mapped[JobState | None] = mapped_column(EnumText(JobState), default=None)
    error_code: Mapped[ErrorCode | None] = mapped_column(EnumText(ErrorCode, 32), default=None)
    error_message: Mapped[str | None] = mapped_column(Text, default=None)
    input_key: Mapped[str | None] = mapped_column(String(512), default=None)
    total_lines: Mapped[int] = mapped_column(Integer, default=0)
    completed_lines: Mapped[int] = mapped_column(Integer, default=0)
    failed_lines: Mapped[int] = mapped_column(Integer, default=0)
    images: Mapped[int] = mapped_column(BigInteger, default=0)
    # What its finished work cost beyond the owner's balance, which stops at zero (see
    # JobStore._bill): the overdraw, recorded rather than taken.
    uncharged_credits: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # Tokens of its vision-language calls, as the backends reported them (never estimated).
    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # Videos its video lines analysed (their sampled frames are not counted in `images`).
    videos: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    chunk_lines: Mapped[int] = mapped_column(Integer)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    callback_url: Mapped[str | None] = mapped_column(Text, default=None)
    callback_secret: Mapped[str | None] = mapped_column(String(64), default=None)
    callback_state: Mapped[CallbackState | None] = mapped_column(
        EnumText(CallbackState), default=None
    )
    output_files: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Set with output_files once the result files are assembled (there may be none): from then
    # on no chunk is recorded, so nothing is billed that no result file holds.
    outputs_assembled: Mapped[bool] = mapped_column(default=False, server_default=false())
    retention_days: Mapped[int] = mapped_column(Integer, default=7)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    completed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), default=None)


class JobChunk(Base):
    """The ledger: one row per chunk whose results blob is written. Inserted once, so counters
    move exactly once however often a chunk is delivered."""

    __tablename__ = "job_chunks"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    index: Mapped[int] = mapped_column(Integer, primary_key=True)
    first_line: Mapped[int] = mapped_column(Integer)
    lines: Mapped[int] = mapped_column(Integer)
    ok_lines: Mapped[int] = mapped_column(Integer)
    failed_lines: Mapped[int] = mapped_column(Integer)
    images: Mapped[int] = mapped_column(BigInteger)
    # Lines refused for what they say, before any inference (see work/chunks.py): a surface may
    # fail a job whose every line is one (empty_batch).
    invalid_lines: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # What its lines cost and the tokens their vision-language calls reported.
    credits: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    videos: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    result_key: Mapped[str] = mapped_column(String(512))
    completed_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class LeaseState(StrEnum):
    """A dispatched chunk: queued (its task is on the broker) → running (a worker holds it) →
    stopping (its job's end is decided: the worker stopped its lines and records what finished)."""

    QUEUED = "queued"
    RUNNING = "running"
    STOPPING = "stopping"


class ChunkLease(Base):
    """A chunk handed to the Celery workers and not yet recorded (see work/dispatch.py).

    `attempt` numbers the deliveries: a task carries the attempt it was sent for, and only that
    attempt may claim the lease, so a message the broker redelivers after the chunk was sent
    again does no work twice. A queued lease expires if no worker claims it in time (its message
    lost, e.g. a broker restarted without persistence); a running one while its worker stops
    renewing it (killed): the reaper then sends the chunk again, as the next attempt."""

    __tablename__ = "chunk_leases"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    index: Mapped[int] = mapped_column(Integer, primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    state: Mapped[LeaseState] = mapped_column(EnumText(LeaseState), default=LeaseState.QUEUED)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
    holder: Mapped[str | None] = mapped_column(String(HOLDER_LENGTH), default=None)  # host:pid


class Leader(Base):
    """Who holds a cluster-wide role (the job dispatcher and reaper) until when: one API replica
    at a time, renewed while it lives, taken over once it lapses."""

    __tablename__ = "leaders"

    role: Mapped[str] = mapped_column(String(32), primary_key=True)
    holder: Mapped[str] = mapped_column(String(HOLDER_LENGTH))  # "host:pid:token"
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
