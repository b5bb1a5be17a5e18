"""Tenant scoping: who is calling, and the only way stores read objects that keys own.

Every owned table has an `owner_key_id` column. Stores select through `owned_by`, and fetch one
object through `get_owned`, which answers not_found, never forbidden, for another key's object,
so a client cannot learn that an id exists. Admin keys see everything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, true
from sqlalchemy.orm import InstrumentedAttribute, Session

from batchvision.accounts.keys import KeyInfo
from batchvision.core.errors import BatchVisionError, ErrorCode

T = TypeVar("T")


@dataclass(frozen=True)
class Principal:
    """The caller. `key_id` is None only when auth is disabled (one implicit tenant)."""

    key_id: int | None
    name: str
    prefix: str | None
    is_admin: bool
    credits_metered: bool = False
    requests_per_minute: int | None = None
    images_per_minute: int | None = None
    client_cert_sha256: str | None = None  # the certificate its requests must present

    @classmethod
    def of(cls, key: KeyInfo) -> Principal:
        return cls(
            key_id=key.id,
            name=key.name,
            prefix=key.prefix,
            is_admin=key.is_admin,
            credits_metered=key.credits is not None,
            requests_per_minute=key.requests_per_minute,
            images_per_minute=key.images_per_minute,
            client_cert_sha256=key.client_cert_sha256,
        )

    @classmethod
    def anonymous(cls) -> Principal:
        return cls(key_id=None, name="anonymous", prefix=None, is_admin=True)

    def owns(self, owner_key_id: int | None) -> bool:
        return self.is_admin or owner_key_id == self.key_id


def owned_by(principal: Principal, owner_column: InstrumentedAttribute[Any]) -> ColumnElement[bool]:
    """A WHERE clause limiting a query to what `principal` may see."""
    if principal.is_admin:
        return true()
    return owner_column == principal.key_id


def not_found(kind: str, object_id: object) -> BatchVisionError:
    return BatchVisionError(ErrorCode.NOT_FOUND, f"{kind} '{object_id}' not found")


def get_owned(
    session: Session, model: type[T], object_id: object, principal: Principal, *, kind: str
) -> T:
    """One object by primary key, or not_found when it is missing or belongs to another key."""
    row = session.get(model, object_id)
    if row is None or not principal.owns(getattr(row, "owner_key_id", None)):
        raise not_found(kind, object_id)
    return row
