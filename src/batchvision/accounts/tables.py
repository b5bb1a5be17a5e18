"""The accounts schema; changes need an Alembic revision in batchvision/migrations/versions."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Boolean, Date, DateTime, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from batchvision.core.db import Base, utcnow

__all__ = ["ApiKey", "Base", "Reservation", "UsageDay", "utcnow"]


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
    # SHA-256 of the OAuth client secret; None: the key has no client credentials.
    oauth_secret_hash: Mapped[str | None] = mapped_column(String(64), default=None)
    # SHA-256 fingerprint (hex) of the certificate its requests must present; None: none.
    client_cert_sha256: Mapped[str | None] = mapped_column(String(64), default=None)


class UsageDay(Base):
    """Per key and UTC day: requests served, images processed, credits charged, and credits
    the work done cost beyond the balance (a job's last chunk billed down to zero)."""

    __tablename__ = "usage_days"

    key_id: Mapped[int] = mapped_column(
        ForeignKey("api_keys.id", ondelete="CASCADE"), primary_key=True
    )
    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    requests: Mapped[int] = mapped_column(BigInteger, default=0)
    images: Mapped[int] = mapped_column(BigInteger, default=0)
    credits: Mapped[int] = mapped_column(BigInteger, default=0)
    uncharged_credits: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class Reservation(Base):
    """Credits taken from a key for one request in flight. Written in the transaction that takes
    them and deleted in the one that settles them, so a row left over after a crash is exactly
    a request that never settled (start-up refunds it)."""

    __tablename__ = "credit_reservations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"))
    request_id: Mapped[str] = mapped_column(String(128))  # the X-Request-ID, to trace it in logs
    credits: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, index=True
    )
