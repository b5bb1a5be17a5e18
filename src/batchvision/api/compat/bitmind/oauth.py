"""`POST /v1/oauth/token`: the OAuth 2.0 client_credentials grant (RFC 6749 §4.4) for keys made
with `batchvision keys create --oauth`.

The client authenticates with form fields `client_id` and `client_secret` or with HTTP Basic
(`client_secret_basic`, what most OAuth libraries send); the answer is `{access_token,
token_type: "Bearer", expires_in}` with Cache-Control: no-store. Errors are RFC 6749 §5.2
bodies `{error, error_description}`: 400 `invalid_request` (a missing field, a body that is
not a form), 400 `unsupported_grant_type`, 401 `invalid_client` (unknown client, wrong secret,
revoked key) with `WWW-Authenticate: Basic`. With auth disabled any client gets a token (every
token then works, as every request does).
"""

from __future__ import annotations

import base64
import binascii
from urllib.parse import parse_qs, unquote

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from batchvision.api.compat.bitmind.auth import TOKEN_URL, access_tokens
from batchvision.api.compat.bitmind.errors import BitmindErrorBody
from batchvision.api.openapi import error_responses, request_body
from batchvision.api.surface import services
from batchvision.core.errors import BatchVisionError
from batchvision.intake.body import read_capped

router = APIRouter(tags=["bitmind"])

FORM = "application/x-www-form-urlencoded"
MAX_FORM_BYTES = 16 * 1024
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class OAuthErrorBody(BaseModel):
    """RFC 6749 §5.2, for the OpenAPI document."""

    error: str
    error_description: str


_TOKEN_RESPONSES = {
    **error_responses(OAuthErrorBody, (400, 401)),
    **error_responses(BitmindErrorBody, (500,)),
}


_TOKEN_BODY = request_body(
    FORM,
    {
        "type": "object",
        "required": ["grant_type"],
        "properties": {
            "grant_type": {"type": "string", "enum": ["client_credentials"]},
            "client_id": {"type": "string", "description": "or HTTP Basic credentials"},
            "client_secret": {"type": "string", "format": "password"},
        },
    },
)


class OAuthError(Exception):
    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status, self.error, self.description = status, error, description

    def response(self) -> JSONResponse:
        headers = dict(_NO_STORE)
        if self.status == 401:
            headers["WWW-Authenticate"] = 'Basic realm="batchvision"'
        body = {"error": self.error, "error_description": self.description}
        return JSONResponse(body, status_code=self.status, headers=headers)


def _invalid(description: str) -> OAuthError:
    return OAuthError(400, "invalid_request", description)


async def _form(request: Request) -> dict[str, str]:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != FORM:
        raise _invalid(f"the body must be {FORM}")
    try:
        body = await read_capped(request.stream(), MAX_FORM_BYTES)
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except (BatchVisionError, UnicodeDecodeError, ValueError):
        raise _invalid(f"the body must be a form of at most {MAX_FORM_BYTES} bytes") from None
    repeated = sorted(name for name, values in fields.items() if len(values) > 1)
    if repeated:  # RFC 6749 §3.2: parameters MUST NOT be included more than once
        raise _invalid(f"{repeated[0]} is given more than once")
    return {name: values[0] for name, values in fields.items()}


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    scheme, _, value = request.headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise OAuthError(401, "invalid_client", "malformed Basic credentials") from None
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise OAuthError(401, "invalid_client", "malformed Basic credentials")
    return unquote(client_id), unquote(secret)  # RFC 6749 §2.3.1: form-encoded, then Basic


def _credentials(request: Request, form: dict[str, str]) -> tuple[str, str]:
    basic = _basic_credentials(request)
    if basic is not None:
        return basic
    client_id, secret = form.get("client_id"), form.get("client_secret")
    if not client_id or not secret:
        raise _invalid("client_id and client_secret are required")
    return client_id, secret


async def _token(request: Request) -> JSONResponse:
    form = await _form(request)
    grant = form.get("grant_type")
    if not grant:
        raise _invalid("grant_type is required")
    if grant != "client_credentials":
        raise OAuthError(400, "unsupported_grant_type", "only client_credentials is supported")
    client_id, secret = _credentials(request, form)
    principal = await services(request).accounts.authenticate_client(client_id, secret)
    if principal is None:
        raise OAuthError(401, "invalid_client", "unknown client, wrong secret or revoked key")
    issued = access_tokens(request).issue(principal.key_id or 0)
    body = {"access_token": issued.token, "token_type": "Bearer", "expires_in": issued.expires_in}
    return JSONResponse(body, headers=_NO_STORE)


@router.post(TOKEN_URL, responses=_TOKEN_RESPONSES, openapi_extra=_TOKEN_BODY)
async def token(request: Request) -> JSONResponse:
    """An access token for OAuth client credentials (client_credentials grant)."""
    try:
        return await _token(request)
    except OAuthError as exc:
        return exc.response()
