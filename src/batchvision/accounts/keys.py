"""API keys: created with a secret shown once, stored as a hash, metered by credits and usage.

A secret looks like `bv_<prefix>_<random>`. The prefix (8 hex characters) is public: it is shown
in listings and logs and used to find the row; the whole secret is hashed with SHA-256 and
compared in constant time. The random part carries 256 bits, so a fast hash is safe here.

A key may also hold OAuth client credentials (client_credentials grant): the client id is
`bvc_<prefix>` (public, like the prefix), the client secret `bvcs_<random>` (256 bits), stored
as its SHA-256 hash the same way. And a key may pin a client certificate: the SHA-256
fingerprint of the DER certificate its requests must present (`accounts.certs`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

from sqlalchemy import Connection, Engine, Executable, case, delete, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from batchvision.accounts.tables import ApiKey, Reservation, UsageDay, utcnow
from batchvision.core import metrics

_SECRET = re.compile(r"^bv_([0-9a-f]{8})_([A-Za-z0-9_-]{43})$")
_CLIENT_ID = re.compile(r"^bvc_([0-9a-f]{8})$")
_FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._@-]{0,99}$")

# Bounds that keep every stored value, and every sum the store computes, inside the columns
# (64-bit credits, 32-bit rates on PostgreSQL); larger numbers used to fail as a 500.
MAX_CREDITS = 10**15
MAX_RATE_PER_MINUTE = 10**9


class AccountError(LookupError):
    """A key name that does not exist, or one that already does; the message says which."""


@dataclass(frozen=True)
class KeyInfo:
    id: int
    name: str
    prefix: str
    created_at: dt.datetime
    revoked_at: dt.datetime | None
    credits: int | None
    requests_per_minute: int | None
    images_per_minute: int | None
    is_admin: bool
    oauth_client_id: str | None = None  # None: no client credentials
    client_cert_sha256: str | None = None  # None: no certificate pinned

    @classmethod
    def of(cls, row: ApiKey) -> KeyInfo:
        return cls(
            id=row.id,
            name=row.name,
            prefix=row.prefix,
            created_at=row.created_at,
            revoked_at=row.revoked_at,
            credits=row.credits,
            requests_per_minute=row.requests_per_minute,
            images_per_minute=row.images_per_minute,
            is_admin=row.is_admin,
            oauth_client_id=client_id(row.prefix) if row.oauth_secret_hash else None,
            client_cert_sha256=row.client_cert_sha256,
        )

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def to_dict(self) -> dict[str, Any]:
        body = asdict(self)
        body["created_at"] = _iso(self.created_at)
        body["revoked_at"] = _iso(self.revoked_at) if self.revoked_at else None
        body["credits"] = "unlimited" if self.credits is None else self.credits
        return body


def _iso(moment: dt.datetime) -> str:
    if moment.tzinfo is None:  # SQLite hands back naive datetimes; they were stored as UTC
        moment = moment.replace(tzinfo=dt.UTC)
    # PostgreSQL hands back timestamptz in the session's TimeZone, which need not be UTC.
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def client_id(prefix: str) -> str:
    """The OAuth client id of the key with this public prefix."""
    return f"bvc_{prefix}"


@dataclass(frozen=True)
class NewKey:
    info: KeyInfo
    secret: str
    client_secret: str | None = None  # shown once, like `secret`, when asked for


def usage_upsert(
    dialect: str, key_id: int, requests: int, images: int, credits: int, uncharged: int = 0
) -> Executable:
    """Add to today's usage row for the key (one statement, so it can join a caller's
    transaction: the job ledger bills a chunk in the same commit that records it)."""
    values = {
        "key_id": key_id,
        "day": utcnow().date(),
        "requests": requests,
        "images": images,
        "credits": credits,
        "uncharged_credits": uncharged,
    }
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    return (
        insert(UsageDay)
        .values(**values)
        .on_conflict_do_update(
            index_elements=[UsageDay.key_id, UsageDay.day],
            set_={
                "requests": UsageDay.requests + requests,
                "images": UsageDay.images + images,
                "credits": UsageDay.credits + credits,
                "uncharged_credits": UsageDay.uncharged_credits + uncharged,
            },
        )
    )


class Usage(NamedTuple):
    """What one settled request adds to its key's usage row."""

    requests: int
    images: int
    credits: int


def _refund(connection: Connection, key_id: int, amount: int) -> None:
    if amount > 0:
        connection.execute(
            update(ApiKey)
            .where(ApiKey.id == key_id, ApiKey.credits.is_not(None))
            .values(credits=ApiKey.credits + amount)
        )


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


class KeyStore:
    """Every accounts read and write. Methods are synchronous; callers run them off the loop."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(
        self,
        name: str,
        *,
        credits: int | None = None,
        requests_per_minute: int | None = None,
        images_per_minute: int | None = None,
        is_admin: bool = False,
        oauth: bool = False,
        client_cert_sha256: str | None = None,
    ) -> NewKey:
        """`oauth`: give the key client credentials too; `client_cert_sha256`: pin the
        certificate (the SHA-256 fingerprint, hex) its requests must present."""
        if not _NAME.match(name):
            raise ValueError("key names are 1-100 letters, digits, spaces or . _ @ -")
        if credits is not None and not 0 <= credits <= MAX_CREDITS:
            raise ValueError(f"credits must be between 0 and {MAX_CREDITS}")
        for rate in (requests_per_minute, images_per_minute):
            if rate is not None and not 1 <= rate <= MAX_RATE_PER_MINUTE:
                raise ValueError(f"rates must be between 1 and {MAX_RATE_PER_MINUTE} per minute")
        if client_cert_sha256 is not None and not _FINGERPRINT.match(client_cert_sha256):
            raise ValueError("a certificate fingerprint is 64 lowercase hex characters")
        prefix = secrets.token_hex(4)
        secret = f"bv_{prefix}_{secrets.token_urlsafe(32)}"
        client_secret = f"bvcs_{secrets.token_urlsafe(32)}" if oauth else None
        row = ApiKey(
            name=name,
            prefix=prefix,
            secret_hash=hash_secret(secret),
            created_at=utcnow(),
            credits=credits,
            requests_per_minute=requests_per_minute,
            images_per_minute=images_per_minute,
            is_admin=is_admin,
            oauth_secret_hash=hash_secret(client_secret) if client_secret else None,
            client_cert_sha256=client_cert_sha256,
        )
        try:
            with Session(self.engine) as session, session.begin():
                session.add(row)
                session.flush()
                info = KeyInfo.of(row)
        except IntegrityError:
            raise AccountError(f"a key named '{name}' already exists") from None
        return NewKey(info, secret, client_secret)

    def all_keys(self) -> list[KeyInfo]:
        with Session(self.engine) as session:
            return [KeyInfo.of(r) for r in session.scalars(select(ApiKey).order_by(ApiKey.id))]

    def get(self, key_id: int) -> KeyInfo | None:
        with Session(self.engine) as session:
            row = session.get(ApiKey, key_id)
            return KeyInfo.of(row) if row else None

    def by_name(self, name: str) -> KeyInfo:
        with Session(self.engine) as session:
            row = session.scalars(select(ApiKey).where(ApiKey.name == name)).first()
            if row is None:
                raise AccountError(f"no key named '{name}'")
            return KeyInfo.of(row)

    def revoke(self, name: str) -> KeyInfo:
        with Session(self.engine) as session, session.begin():
            row = session.scalars(select(ApiKey).where(ApiKey.name == name)).first()
            if row is None:
                raise AccountError(f"no key named '{name}'")
            if row.revoked_at is None:
                row.revoked_at = utcnow()
            return KeyInfo.of(row)

    def add_credits(self, name: str, amount: int) -> KeyInfo:
        """Add to a metered key's balance; a negative amount takes credits away (not below 0).

        One UPDATE computes the new balance in the database, so reservations and refunds running
        at the same time are never overwritten. An unlimited key is refused (ValueError): adding
        to it must not silently turn it into a key with `amount` credits."""
        if not -MAX_CREDITS <= amount <= MAX_CREDITS:
            raise ValueError(f"the amount must be between -{MAX_CREDITS} and {MAX_CREDITS}")
        with Session(self.engine) as session, session.begin():
            row = session.scalars(select(ApiKey).where(ApiKey.name == name)).first()
            if row is None:
                raise AccountError(f"no key named '{name}'")
            if row.credits is None:
                raise ValueError(f"key '{name}' has unlimited credits")
            balance = ApiKey.credits + amount
            session.execute(
                update(ApiKey)
                .where(ApiKey.id == row.id)
                .values(
                    credits=case(
                        (balance < 0, 0), (balance > MAX_CREDITS, MAX_CREDITS), else_=balance
                    )
                )
                .execution_options(synchronize_session=False)
            )
            session.refresh(row)
            return KeyInfo.of(row)

    def authenticate(self, secret: str) -> KeyInfo | None:
        """The active key whose secret this is, or None (unknown, malformed or revoked)."""
        match = _SECRET.match(secret)
        if match is None:
            return None
        with Session(self.engine) as session:
            row = session.scalars(select(ApiKey).where(ApiKey.prefix == match.group(1))).first()
            if row is None or not hmac.compare_digest(row.secret_hash, hash_secret(secret)):
                return None
            info = KeyInfo.of(row)
        return info if info.active else None

    def authenticate_client(self, client: str, client_secret: str) -> KeyInfo | None:
        """The active key whose OAuth client id and secret these are, or None."""
        match = _CLIENT_ID.match(client)
        if match is None:
            return None
        with Session(self.engine) as session:
            row = session.scalars(select(ApiKey).where(ApiKey.prefix == match.group(1))).first()
            if row is None or row.oauth_secret_hash is None:
                return None
            if not hmac.compare_digest(row.oauth_secret_hash, hash_secret(client_secret)):
                return None
            info = KeyInfo.of(row)
        return info if info.active else None

    def reserve(self, key_id: int, amount: int, request_id: str = "-") -> int | None:
        """Take `amount` credits and record the reservation in one transaction; its id, or None
        when the key is short (or revoked). The conditional UPDATE means concurrent reservations
        can never overdraw: the database serialises them. Unlimited keys always succeed."""
        with self.engine.begin() as connection:
            result = connection.execute(
                update(ApiKey)
                .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
                .where((ApiKey.credits.is_(None)) | (ApiKey.credits >= amount))
                .values(credits=ApiKey.credits - amount)
            )
            if result.rowcount != 1:
                return None
            row = {"key_id": key_id, "request_id": request_id, "credits": amount}
            inserted = connection.execute(
                insert(Reservation).values(**row, created_at=utcnow()).returning(Reservation.id)
            )
            reservation_id: int = inserted.scalar_one()
            return reservation_id

    def settle(self, reservation_id: int, *, refund: int, usage: Usage | None) -> bool:
        """End a reservation: hand back `refund` credits and record `usage`, in the transaction
        that deletes it. False when it was settled already (by start-up, after a crash): then
        nothing changes, so no request is ever refunded or billed twice."""
        with self.engine.begin() as connection:
            held = connection.execute(
                delete(Reservation)
                .where(Reservation.id == reservation_id)
                .returning(Reservation.key_id, Reservation.credits)
            ).first()
            if held is None:
                return False
            _refund(connection, held.key_id, min(refund, held.credits))
            if usage is not None:
                statement = usage_upsert(self.engine.dialect.name, held.key_id, *usage)
                connection.execute(statement)
                metrics.CREDITS_CHARGED.labels(source="request").inc(usage.credits)
            return True

    def settle_abandoned(self, made_before: dt.datetime) -> list[tuple[str, int]]:
        """Refund, in full and without usage, every reservation made before `made_before` that
        never settled: its request died with the process. The (request id, credits) refunded."""
        with Session(self.engine) as session:
            stale = session.execute(
                select(Reservation.id, Reservation.request_id, Reservation.credits)
                .where(Reservation.created_at < made_before)
                .order_by(Reservation.id)
            ).all()
        return [
            (request_id, credits)
            for reservation_id, request_id, credits in stale
            if self.settle(reservation_id, refund=credits, usage=None)
        ]

    def refund(self, key_id: int, amount: int) -> None:
        """Hand back credits outside any reservation (none to an unlimited key, none for <= 0)."""
        with self.engine.begin() as connection:
            _refund(connection, key_id, amount)

    def record_usage(self, key_id: int, *, requests: int, images: int, credits: int) -> None:
        statement = usage_upsert(self.engine.dialect.name, key_id, requests, images, credits)
        with self.engine.begin() as connection:
            connection.execute(statement)

    def usage(self, key_id: int, *, days: int = 30) -> list[dict[str, Any]]:
        since = utcnow().date() - dt.timedelta(days=days - 1)
        with Session(self.engine) as session:
            rows = session.scalars(
                select(UsageDay)
                .where(UsageDay.key_id == key_id, UsageDay.day >= since)
                .order_by(UsageDay.day)
            )
            return [
                {
                    "date": r.day.isoformat(),
                    "requests": r.requests,
                    "images": r.images,
                    "credits": r.credits,
                    "uncharged_credits": r.uncharged_credits,
                }
                for r in rows
            ]
