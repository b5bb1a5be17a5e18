"""Signed, expiring download URLs for job outputs served by batchvision itself.

A signed URL is a server path plus ``?expires=<unix seconds>&signature=<hex>``, where the
signature is HMAC-SHA256 over ``f"{path}\\n{expires}"`` with a server-side secret. It is a
bearer credential: anyone holding the URL can download that one path until it expires, without
an API key; that is what signed URLs are for, so hand them out with short lifetimes and only to
whoever may read the output. Changing any byte of the path, the expiry or the signature makes
it invalid.

The secret lives in ``data_dir / "url-signing.key"`` (64 hex characters, mode 0600), created on
first use and reused across restarts so that URLs stay valid. Keep the file private: whoever reads
it can sign URLs for any output. Several API replicas must share the same secret: the same file,
or `url_signing_secret` (BATCHVISION_URL_SIGNING_SECRET, at least 32 hex characters) set alike on
each, which then replaces the file. To revoke every outstanding URL, stop the servers, delete the
file (or change the setting), and start them again.

Sign and verify the same form of the path: the decoded request path as the router sees it
(``request.url.path``), without query string or fragment.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import stat
import time
from pathlib import Path

from batchvision.core.fsutil import write_atomic

log = logging.getLogger(__name__)

KEY_FILE_NAME = "url-signing.key"
SECRET_BYTES = 32
MIN_SECRET_BYTES = 16
EXPIRES_PARAM = "expires"
SIGNATURE_PARAM = "signature"

_EXPIRES = re.compile(r"[0-9]{1,15}", re.ASCII)
_SIGNATURE = re.compile(r"[0-9a-fA-F]{64}", re.ASCII)


class UrlSigner:
    """Signs and verifies ``expires``/``signature`` query parameters for server paths."""

    def __init__(self, secret: bytes) -> None:
        if not isinstance(secret, bytes) or len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"URL signing secret must be at least {MIN_SECRET_BYTES} bytes")
        self._secret = secret

    def __repr__(self) -> str:
        return "UrlSigner(<secret>)"

    @classmethod
    def from_settings(cls, data_dir: Path, secret_hex: str | None) -> UrlSigner:
        """The configured secret (hex) if there is one, else the data directory's file."""
        if secret_hex is None:
            return cls.from_data_dir(data_dir)
        return cls(bytes.fromhex(secret_hex))

    @classmethod
    def from_data_dir(cls, data_dir: Path) -> UrlSigner:
        """Load the secret from ``data_dir/url-signing.key``, creating it on first use."""
        return cls(load_or_create_secret(data_dir / KEY_FILE_NAME))

    def sign(self, path: str, *, expires_at: int) -> str:
        """Return the query string ``expires=<unix>&signature=<hex>`` for ``path``.

        The URL is valid while the current time (unix seconds) is before ``expires_at``.
        """
        if not _is_server_path(path):
            raise ValueError(f"not a server path: {path!r}")
        if isinstance(expires_at, bool) or not isinstance(expires_at, int) or expires_at < 0:
            raise ValueError("expires_at must be a non-negative integer (unix seconds)")
        expires = str(expires_at)
        if not _EXPIRES.fullmatch(expires):
            raise ValueError("expires_at is out of range")
        return f"{EXPIRES_PARAM}={expires}&{SIGNATURE_PARAM}={self._mac(path, expires)}"

    def verify(
        self,
        path: str,
        expires: str | None,
        signature: str | None,
        *,
        now: int | None = None,
    ) -> bool:
        """True only for an unexpired signature made by :meth:`sign` for exactly this path.

        Never raises for malformed input (missing, non-numeric, non-hex, wrong length): it is False.
        """
        if not isinstance(path, str) or not _is_server_path(path):
            return False
        if not isinstance(expires, str) or not _EXPIRES.fullmatch(expires):
            return False
        if not isinstance(signature, str) or not _SIGNATURE.fullmatch(signature):
            return False
        current = int(time.time()) if now is None else now
        # Signature before expiry, so that timing says nothing about which check failed.
        valid = hmac.compare_digest(self._mac(path, expires), signature.lower())
        return valid and current < int(expires)

    def _mac(self, path: str, expires: str) -> str:
        message = f"{path}\n{expires}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()


def _is_server_path(path: str) -> bool:
    return (
        path.startswith("/")
        and "?" not in path
        and "#" not in path
        and path.isprintable()  # no newline (the message separator), no control characters
        and len(path) <= 4096
    )


def load_or_create_secret(key_file: Path) -> bytes:
    """Read the hex secret in ``key_file``; create it (atomically, mode 0600) if it is missing.

    Creation is an atomic write that never replaces an existing file, so concurrent first
    starts agree on one secret and nobody ever reads a half-written file. A present but malformed
    file is an error rather than silently replaced, which would invalidate every issued URL.
    """
    try:
        return _read_secret(key_file)
    except FileNotFoundError:
        pass
    key_file.parent.mkdir(parents=True, exist_ok=True)
    secret = (secrets.token_hex(SECRET_BYTES) + "\n").encode("ascii")
    # Mode 0600 whatever the umask; overwrite=False: concurrent first starts keep the first key.
    write_atomic(key_file, secret, mode=0o600, overwrite=False)
    return _read_secret(key_file)


def _read_secret(key_file: Path) -> bytes:
    with key_file.open("r", encoding="ascii") as file:
        mode = stat.S_IMODE(os.fstat(file.fileno()).st_mode)
        try:
            text = file.read(1024).strip()
        except UnicodeDecodeError:
            text = ""
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        secret = b""
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(
            f"{key_file} does not hold a valid URL signing key (hex, at least "
            f"{MIN_SECRET_BYTES} bytes); move it away to create a new one"
        )
    if mode & 0o077:
        log.warning("%s is readable by other users (mode %o); chmod 600 it", key_file, mode)
    return secret
