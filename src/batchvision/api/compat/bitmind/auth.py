"""Who calls the BitMind routes: `Authorization: Bearer <token>`, where the token is a
batchvision API key or an access token from `POST /v1/oauth/token`; and, for a key that pins
a client certificate, the `X-Client-Cert` header that must carry it (403 otherwise).

Access tokens are signed with a secret kept in `data_dir/access-token.key` (created on first
use, mode 0600, like the URL-signing key: replicas share the file; deleting it ends every
outstanding token)."""

from __future__ import annotations

from fastapi import Request, Security
from fastapi.openapi.models import OAuthFlowClientCredentials, OAuthFlows
from fastapi.security import OAuth2

from batchvision.accounts.certs import header_fingerprint
from batchvision.accounts.scoping import Principal
from batchvision.accounts.service import unauthorized
from batchvision.accounts.tokens import AccessTokens
from batchvision.api.access import BEARER, admit, bearer_token
from batchvision.api.surface import services
from batchvision.core.errors import BatchVisionError, ErrorCode
from batchvision.jobs.signing import load_or_create_secret

SECRET_FILE = "access-token.key"  # noqa: S105 (a file name)
CLIENT_CERT_HEADER = "x-client-cert"
TOKEN_URL = "/v1/oauth/token"  # noqa: S105 (a path)

# For the OpenAPI document (api/access.py, BEARER): "Authorize" fetches a token from TOKEN_URL
# with a client id and secret (`keys create --oauth`) and sends it as a Bearer header, which
# `bitmind_principal` checks. A key itself goes in `bearer`.
CLIENT_CREDENTIALS = OAuth2(
    flows=OAuthFlows(clientCredentials=OAuthFlowClientCredentials(tokenUrl=TOKEN_URL)),
    scheme_name="bitmindOAuth",
    auto_error=False,
    description="BitMind routes: an access token for OAuth client credentials "
    "(`batchvision keys create --oauth`), or an API key in the `bearer` scheme.",
)
SECURED = [Security(BEARER), Security(CLIENT_CREDENTIALS)]  # a route's `dependencies`


def access_tokens(request: Request) -> AccessTokens:
    """The app's token signer, made once (the secret file is read on first use)."""
    state = request.app.state
    tokens: AccessTokens | None = getattr(state, "access_tokens", None)
    if tokens is None:
        settings = services(request).settings
        secret = load_or_create_secret(settings.data_dir / SECRET_FILE)
        tokens = state.access_tokens = AccessTokens(secret, settings.access_token_lifetime_s)
    return tokens


async def _authenticate(request: Request, token: str | None) -> Principal:
    accounts = services(request).accounts
    if token is None or not AccessTokens.looks_like(token) or not accounts.required:
        return await accounts.authenticate(token)
    key_id = access_tokens(request).key_id(token)
    if key_id is None:
        raise unauthorized("invalid or expired access token")
    return await accounts.authenticate_key(key_id)


def check_client_cert(request: Request, principal: Principal) -> None:
    """A key that pins a certificate needs it in X-Client-Cert; other keys ignore the header."""
    pinned = principal.client_cert_sha256
    if pinned is None:
        return
    sent = request.headers.get(CLIENT_CERT_HEADER)
    if sent is None:
        raise BatchVisionError(ErrorCode.FORBIDDEN, "this key requires an X-Client-Cert header")
    if header_fingerprint(sent) != pinned:
        raise BatchVisionError(
            ErrorCode.FORBIDDEN, "X-Client-Cert is not the certificate pinned to this key"
        )


async def bitmind_principal(request: Request) -> Principal:
    principal = await _authenticate(request, bearer_token(request.headers))
    check_client_cert(request, principal)
    return admit(request, principal)
