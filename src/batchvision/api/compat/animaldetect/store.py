"""Stored batch-detect responses, read only through the caller's tenant scope.

A response is written once and never changed. Expired rows are purged by the write that follows
them (no sweeper needed: the table only grows while requests arrive), and a read past
`expires_at` is "not found" even before the purge has run.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, delete
from sqlalchemy.orm import Session

from batchvision.accounts.scoping import Principal, get_owned, not_found
from batchvision.api.compat.animaldetect.tables import DetectResult
from batchvision.core.db import utcnow

KIND = "batch result"


def _aware(moment: dt.datetime) -> dt.datetime:
    # SQLite hands back naive datetimes; every stored time is UTC.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class NewResult:
    id: str
    route: str
    created_at: dt.datetime
    expires_at: dt.datetime
    response: dict[str, Any]


class DetectResultStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def save(self, principal: Principal, result: NewResult) -> None:
        """Store `result` for `principal`, purging every expired row in the same commit."""
        row = DetectResult(
            id=result.id,
            owner_key_id=principal.key_id,
            route=result.route,
            created_at=result.created_at,
            expires_at=result.expires_at,
            response=json.dumps(result.response, separators=(",", ":")),
        )
        with Session(self.engine) as session, session.begin():
            session.execute(delete(DetectResult).where(DetectResult.expires_at <= utcnow()))
            session.add(row)

    def purge_expired(self, now: dt.datetime | None = None) -> int:
        """Delete every row past its expiry (the server's retention sweep; writes purge too)."""
        with self.engine.begin() as connection:
            result = connection.execute(
                delete(DetectResult).where(DetectResult.expires_at <= (now or utcnow()))
            )
            return int(result.rowcount)

    def get(self, principal: Principal, result_id: str) -> dict[str, Any]:
        """The stored response; not_found when it is missing, expired or another key's."""
        try:  # ids are uuid4 strings; anything else (a NUL byte PostgreSQL refuses) is unknown
            key = str(uuid.UUID(result_id))
        except ValueError:
            raise not_found(KIND, result_id) from None
        with Session(self.engine) as session:
            row = get_owned(session, DetectResult, key, principal, kind=KIND)
            if _aware(row.expires_at) <= utcnow():
                raise not_found(KIND, result_id)
            body: dict[str, Any] = json.loads(row.response)
            return body
