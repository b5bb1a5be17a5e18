"""Client certificates pinned to keys: the SHA-256 fingerprint of the DER certificate.

Only the fingerprint is compared. batchvision does not terminate TLS: the proxy in front of it
that does (and that checked the client holds the certificate's private key) forwards the
certificate, and a pinned key's requests must carry that very certificate.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from urllib.parse import unquote

_PEM = re.compile(
    rb"-----BEGIN CERTIFICATE-----\s*([A-Za-z0-9+/=\s]+?)\s*-----END CERTIFICATE-----"
)


def fingerprint(pem: bytes) -> str:
    """The SHA-256 fingerprint (lowercase hex) of the first certificate in PEM text; a
    ValueError when there is none."""
    match = _PEM.search(pem)
    if match is None:
        raise ValueError("no PEM certificate (-----BEGIN CERTIFICATE-----) found")
    try:
        der = base64.b64decode(b"".join(match.group(1).split()), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the PEM certificate is not valid base64") from None
    return hashlib.sha256(der).hexdigest()


def header_fingerprint(value: str) -> str | None:
    """The fingerprint of an `X-Client-Cert` header: base64 of the PEM certificate (the hosted API's
    form), or the PEM itself URL-encoded (nginx's `$ssl_client_escaped_cert`) or with its line
    breaks removed; None when it holds no certificate."""
    text = unquote(value.strip()).encode("ascii", "replace")
    if not text.startswith(b"-----BEGIN"):
        try:
            text = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            return None
    try:
        return fingerprint(text)
    except ValueError:
        return None
