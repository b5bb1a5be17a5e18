"""Accounts routes: `/v1/usage` for the calling key, `/v1/keys` to manage keys.

A key sees only itself; admin keys see and manage every key. Another key's id answers 404, so
ids reveal nothing.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from batchvision.accounts.certs import fingerprint
from batchvision.accounts.keys import MAX_CREDITS, MAX_RATE_PER_MINUTE, AccountError, KeyInfo
from batchvision.accounts.scoping import Principal, not_found
from batchvision.api.access import native_principal
from batchvision.api.bodies import Model, parse_body
from batchvision.api.openapi import BODY, KEYED, NativeErrorBody, error_responses
from batchvision.api.surface import services
from batchvision.core.errors import BatchVisionError, ErrorCode
from batchvision.intake.body import BodyLimits, read_json

router = APIRouter(tags=["accounts"])

Authorized = Annotated[Principal, Depends(native_principal)]

_MAX_ID = 2**63  # ids are signed 64-bit integers


class NewKeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(min_length=1, max_length=100)
    credits: int | None = Field(None, ge=0, le=MAX_CREDITS, description="omit for unlimited")
    requests_per_minute: int | None = Field(None, ge=1, le=MAX_RATE_PER_MINUTE)
    images_per_minute: int | None = Field(None, ge=1, le=MAX_RATE_PER_MINUTE)
    admin: bool = False
    oauth: bool = Field(False, description="also give the key OAuth client credentials")
    client_cert: str | None = Field(
        None,
        max_length=64 * 1024,
        description="PEM certificate the key's requests must present in X-Client-Cert",
    )

    def pinned_fingerprint(self) -> str | None:
        if self.client_cert is None:
            return None
        try:
            return fingerprint(self.client_cert.encode())
        except ValueError as exc:
            raise BatchVisionError(ErrorCode.INVALID_PARAMETER, f"client_cert: {exc}") from None


class CreditsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    amount: int = Field(
        ge=-MAX_CREDITS, le=MAX_CREDITS, description="credits to add; negative takes credits away"
    )


def _require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise BatchVisionError(ErrorCode.FORBIDDEN, "this needs an admin key")


def _require_key(principal: Principal) -> int:
    if principal.key_id is None:
        raise BatchVisionError(
            ErrorCode.NOT_FOUND,
            "usage is recorded per API key; this server runs with auth disabled",
        )
    return principal.key_id


async def _body(request: Request, model: type[Model]) -> Model:
    limits = BodyLimits.from_settings(services(request).settings)
    body = await read_json(request.stream(), limits)
    return parse_body(model, body, ErrorCode.INVALID_PARAMETER)


async def _visible_key(request: Request, principal: Principal, key_id: int) -> KeyInfo:
    if not 0 < key_id < _MAX_ID:  # no such row; the database cannot even take the number
        raise not_found("key", key_id)
    accounts = services(request).accounts
    key = await accounts.run(accounts.keys.get, key_id)
    if key is None or not principal.owns(key.id):
        raise not_found("key", key_id)
    return key


# The statuses each route answers besides its success, for the OpenAPI document: 400 for a
# malformed key id, 404 for another owner's key, 403 where an admin key is needed.
_READ_ERRORS = error_responses(NativeErrorBody, KEYED)
_USAGE_ERRORS = error_responses(NativeErrorBody, (*KEYED, 400, 404))
_KEY_ERRORS = error_responses(NativeErrorBody, (*KEYED, 400, 404))
_CREATE_ERRORS = error_responses(NativeErrorBody, (*KEYED, *BODY, 403, 409, 415, 422, 507))
_CREDITS_ERRORS = error_responses(NativeErrorBody, (*KEYED, *BODY, 403, 404, 415, 422, 507))


@router.get("/v1/usage", responses=_USAGE_ERRORS)
async def usage(
    request: Request, principal: Authorized, days: Annotated[int, Query(ge=1, le=366)] = 30
) -> dict[str, Any]:
    """Balance, images processed, requests, credits charged and uncharged (work a job finished
    after the balance reached zero) by UTC day for the calling key."""
    key_id = _require_key(principal)
    accounts = services(request).accounts
    key = await accounts.run(accounts.keys.get, key_id)
    rows = await accounts.run(accounts.keys.usage, key_id, days=days)
    assert key is not None  # authenticated a moment ago
    counted = ("requests", "images", "credits", "uncharged_credits")
    totals = {name: sum(r[name] for r in rows) for name in counted}
    return {
        "key": {"id": key.id, "name": key.name, "prefix": key.prefix},
        "balance": "unlimited" if key.credits is None else key.credits,
        "totals": totals,
        "days": rows,
    }


@router.get("/v1/keys", responses=_READ_ERRORS)
async def list_keys(request: Request, principal: Authorized) -> dict[str, Any]:
    accounts = services(request).accounts
    keys = await accounts.run(accounts.keys.all_keys)
    return {"keys": [key.to_dict() for key in keys if principal.owns(key.id)]}


@router.get("/v1/keys/{key_id}", responses=_KEY_ERRORS)
async def get_key(request: Request, principal: Authorized, key_id: int) -> dict[str, Any]:
    return (await _visible_key(request, principal, key_id)).to_dict()


@router.post("/v1/keys", status_code=201, responses=_CREATE_ERRORS)
async def create_key(request: Request, principal: Authorized) -> JSONResponse:
    """Create a key (admin only). The secret (and, with `oauth`, the client secret) is in this
    response and nowhere else, ever."""
    _require_admin(principal)
    spec = await _body(request, NewKeyRequest)
    pinned = spec.pinned_fingerprint()
    accounts = services(request).accounts
    try:
        created = await accounts.run(
            accounts.keys.create,
            spec.name,
            credits=spec.credits,
            requests_per_minute=spec.requests_per_minute,
            images_per_minute=spec.images_per_minute,
            is_admin=spec.admin,
            oauth=spec.oauth,
            client_cert_sha256=pinned,
        )
    except (AccountError, ValueError) as exc:
        raise BatchVisionError(ErrorCode.INVALID_PARAMETER, str(exc)) from None
    body: dict[str, Any] = {"key": created.info.to_dict(), "secret": created.secret}
    if created.client_secret is not None:
        body["client_id"] = created.info.oauth_client_id
        body["client_secret"] = created.client_secret
    return JSONResponse(body, status_code=201)


@router.post("/v1/keys/{key_id}/revoke", responses=_KEY_ERRORS)
async def revoke_key(request: Request, principal: Authorized, key_id: int) -> dict[str, Any]:
    """Admins revoke any key; a key may revoke itself (a leaked secret)."""
    key = await _visible_key(request, principal, key_id)
    accounts = services(request).accounts
    return (await accounts.run(accounts.keys.revoke, key.name)).to_dict()


@router.post("/v1/keys/{key_id}/credits", responses=_CREDITS_ERRORS)
async def add_credits(request: Request, principal: Authorized, key_id: int) -> dict[str, Any]:
    _require_admin(principal)
    key = await _visible_key(request, principal, key_id)
    change = await _body(request, CreditsRequest)
    accounts = services(request).accounts
    try:
        updated = await accounts.run(accounts.keys.add_credits, key.name, change.amount)
    except ValueError as exc:  # an unlimited key
        raise BatchVisionError(ErrorCode.INVALID_PARAMETER, str(exc)) from None
    return updated.to_dict()
