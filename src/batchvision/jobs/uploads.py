"""S3-style multipart uploads of job files: the rows behind create → parts → complete | abort.

An upload belongs to the key that created it; every client-facing read goes through
`get_owned`, so another key's upload (or a wrong `uploadId`) is simply not found. Parts may
arrive in any order and be sent again: the last copy of a part number wins, as in S3. Only the
parts named at completion, with matching etags, make up the file.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, delete, select, update
from sqlalchemy.orm import Session

from batchvision.accounts.scoping import Principal, get_owned, not_found
from batchvision.core.db import utcnow
from batchvision.core.errors import BatchVisionError, ErrorCode
from batchvision.jobs.tables import Upload, UploadPart, UploadState

MAX_PART_NUMBER = 10_000  # as in S3


def _aware(moment: dt.datetime) -> dt.datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class UploadView:
    id: str  # the client's fileId
    owner_key_id: int | None
    upload_id: str
    surface: str
    state: UploadState
    created_at: dt.datetime
    expires_at: dt.datetime

    @classmethod
    def of(cls, row: Upload) -> UploadView:
        return cls(
            row.id,
            row.owner_key_id,
            row.upload_id,
            row.surface,
            row.state,
            _aware(row.created_at),
            _aware(row.expires_at),
        )

    def part_key(self, part_number: int) -> str:
        return f"uploads/{self.id}/parts/{part_number:05d}"


@dataclass(frozen=True)
class PartView:
    part_number: int
    etag: str  # quoted, as S3 and S3-style batch APIs send it: "\"<md5 hex>\""
    size: int
    blob_key: str


def quote_etag(md5_hex: str) -> str:
    return f'"{md5_hex}"'


def same_etag(given: Any, stored: str) -> bool:
    """Clients echo the etag with or without its quotes; compare the digests."""
    return isinstance(given, str) and given.strip().strip('"').lower() == stored.strip('"')


def check_part_number(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PART_NUMBER:
        raise BatchVisionError(
            ErrorCode.INVALID_PARAMETER,
            f"partNumber must be an integer from 1 to {MAX_PART_NUMBER}",
        )
    return value


class UploadStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(self, principal: Principal, *, surface: str, ttl: dt.timedelta) -> UploadView:
        now = utcnow()
        row = Upload(
            id=secrets.token_hex(16),
            owner_key_id=principal.key_id,
            upload_id=secrets.token_urlsafe(32),
            surface=surface,
            state=UploadState.OPEN,
            created_at=now,
            expires_at=now + ttl,
        )
        with Session(self.engine) as session, session.begin():
            session.add(row)
            session.flush()
            return UploadView.of(row)

    def get_open(self, principal: Principal, file_id: str, upload_id: str | None) -> UploadView:
        """The caller's open upload; not found for a wrong upload id, another key's upload,
        or one already completed, aborted or expired (S3's NoSuchUpload)."""
        with Session(self.engine) as session:
            row = get_owned(session, Upload, file_id, principal, kind="upload")
            if row.state is not UploadState.OPEN or not _same_token(upload_id, row.upload_id):
                raise not_found("upload", file_id)
            if _aware(row.expires_at) <= utcnow():
                raise not_found("upload", file_id)
            return UploadView.of(row)

    def put_part(self, file_id: str, part: PartView) -> None:
        with Session(self.engine) as session, session.begin():
            session.merge(
                UploadPart(
                    upload_id=file_id,
                    part_number=part.part_number,
                    etag=part.etag,
                    size=part.size,
                    blob_key=part.blob_key,
                )
            )

    def parts(self, file_id: str) -> dict[int, PartView]:
        with Session(self.engine) as session:
            rows = session.scalars(select(UploadPart).where(UploadPart.upload_id == file_id))
            return {
                r.part_number: PartView(r.part_number, r.etag, r.size, r.blob_key) for r in rows
            }

    def close(self, file_id: str, state: UploadState, *, size: int | None = None) -> bool:
        """open → completed | aborted | expired, once; False if it was no longer open (a
        concurrent complete/abort won)."""
        with self.engine.begin() as connection:
            result = connection.execute(
                update(Upload)
                .where(Upload.id == file_id, Upload.state == UploadState.OPEN)
                .values(state=state, size=size)
            )
            if result.rowcount == 1:
                connection.execute(delete(UploadPart).where(UploadPart.upload_id == file_id))
            return bool(result.rowcount == 1)

    def expired(self, now: dt.datetime) -> list[UploadView]:
        with Session(self.engine) as session:
            rows = session.scalars(
                select(Upload).where(Upload.state == UploadState.OPEN, Upload.expires_at <= now)
            )
            return [UploadView.of(r) for r in rows]


def _same_token(given: str | None, stored: str) -> bool:
    return given is not None and secrets.compare_digest(given.encode(), stored.encode())
