"""The accounts schema; changes need an Alembic revision in batchvision/migrations/versions."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Boolean, Date, DateTime, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from batchvision.core.db import Base, utcnow

__all__ = ["ApiKey", "Base", "UsageDay", "utcnow"]


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    credits: Mapped[int | None] = mapped_column(BigInteger, default=None)  # None: unlimited
    requests_per_minute: Mapped[int | None] = mapped_column(Integer, default=None)
    images_per_minute: Mapped[int | None] = mapped_column(Integer, default=None)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)


class UsageDay(Base):
    """Per key and UTC day: requests served, images processed, credits charged."""

    __tablename__ = "usage_days"

    key_id: Mapped[int] = mapped_column(
        ForeignKey("api_keys.id", ondelete="CASCADE"), primary_key=True
    )
    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    requests: Mapped[int] = mapped_column(BigInteger, default=0)
    images: Mapped[int] = mapped_column(BigInteger, default=0)
    credits: Mapped[int] = mapped_column(BigInteger, default=0)
