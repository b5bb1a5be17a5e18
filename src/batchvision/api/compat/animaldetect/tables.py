"""The stored batch-detect responses; changes need an Alembic revision in
batchvision/migrations/versions."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import DateTime, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from batchvision.core.db import Base, utcnow


class DetectResult(Base):
    """One batch-detect response, exactly as it was sent, until `expires_at`."""

    __tablename__ = "detect_results"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # the response's uuid4 `id`
    owner_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id"), index=True)
    route: Mapped[str] = mapped_column(String(32))  # batch-detect | batch-detect-urban
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
    response: Mapped[str] = mapped_column(Text)  # the JSON body
