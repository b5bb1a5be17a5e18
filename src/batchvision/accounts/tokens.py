"""Signed, expiring access tokens for API keys (the OAuth 2.0 client_credentials grant).

A token is `bvat_<key id>_<expires>_<signature>`: the key's id, the unix second it stops
working, and HMAC-SHA256 over both with a server-side secret. Nothing is stored per token: a
token is checked by its signature and expiry, and then the key it names must still be active,
so revoking the key kills every token issued for it at once. The secret is the caller's (the
API keeps it in the data directory, as it keeps the URL-signing secret); replicas must share
it, and replacing it ends every outstanding token.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from dataclasses import dataclass

PREFIX = "bvat_"
_TOKEN = re.compile(r"^bvat_([0-9]{1,18})_([0-9]{1,15})_([0-9a-f]{64})$", re.ASCII)
MIN_SECRET_BYTES = 16


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_in: int  # seconds


class AccessTokens:
    """Issues and checks access tokens under one secret."""

    def __init__(self, secret: bytes, lifetime_s: int) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"the token secret must be at least {MIN_SECRET_BYTES} bytes")
        self._secret = secret
        self.lifetime_s = lifetime_s

    def __repr__(self) -> str:
        return "AccessTokens(<secret>)"

    @staticmethod
    def looks_like(token: str) -> bool:
        """Whether `token` is meant as an access token (rather than an API key)."""
        return token.startswith(PREFIX)

    def issue(self, key_id: int, now: float | None = None) -> IssuedToken:
        expires = int(time.time() if now is None else now) + self.lifetime_s
        token = f"{PREFIX}{key_id}_{expires}_{self._mac(str(key_id), str(expires))}"
        return IssuedToken(token, self.lifetime_s)

    def key_id(self, token: str, now: float | None = None) -> int | None:
        """The key a valid, unexpired token was issued for; None for anything else."""
        match = _TOKEN.match(token)
        if match is None:
            return None
        key_id, expires, signature = match.groups()
        valid = hmac.compare_digest(self._mac(key_id, expires), signature)
        current = time.time() if now is None else now
        return int(key_id) if valid and current < int(expires) else None

    def _mac(self, key_id: str, expires: str) -> str:
        message = f"access-token\n{key_id}\n{expires}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()
