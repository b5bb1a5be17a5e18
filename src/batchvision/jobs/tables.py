"""The jobs schema; changes need an Alembic revision in batchvision/migrations/versions."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, DateTime, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from batchvision.core.db import Base, utcnow

OWNER = "api_keys.id"


class Upload(Base):
    """An S3-style multipart upload of a JSONL file (a client's `fileId` is this id)."""

    __tablename__ = "uploads"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner_key_id: Mapped[int | None] = mapped_column(ForeignKey(OWNER), index=True)
    upload_id: Mapped[str] = mapped_column(String(64))
    surface: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16), default="open")  # open|completed|aborted
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
    # chunking -> processing -> completed | failed | cancelled | expired
    state: Mapped[str] = mapped_column(String(16), default="chunking", index=True)
    error_code: Mapped[str | None] = mapped_column(String(32), default=None)
    error_message: Mapped[str | None] = mapped_column(Text, default=None)
    input_key: Mapped[str | None] = mapped_column(String(512), default=None)
    total_lines: Mapped[int] = mapped_column(Integer, default=0)
    completed_lines: Mapped[int] = mapped_column(Integer, default=0)
    failed_lines: Mapped[int] = mapped_column(Integer, default=0)
    images: Mapped[int] = mapped_column(BigInteger, default=0)
    tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    chunk_lines: Mapped[int] = mapped_column(Integer)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    callback_url: Mapped[str | None] = mapped_column(Text, default=None)
    callback_secret: Mapped[str | None] = mapped_column(String(64), default=None)
    # None (no callback) | pending | delivered | failed; pending ones are retried on start
    callback_state: Mapped[str | None] = mapped_column(String(16), default=None)
    output_files: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
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
    result_key: Mapped[str] = mapped_column(String(512))
    completed_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
