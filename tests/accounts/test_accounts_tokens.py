"""Access tokens and certificate fingerprints, the pure parts of BitMind-style auth."""

from __future__ import annotations

import base64
import hashlib
import ssl
from collections.abc import Callable
from urllib.parse import quote

import pytest

from batchvision.accounts.certs import fingerprint, header_fingerprint
from batchvision.accounts.tokens import AccessTokens

SECRET = b"s" * 32
NOW = 1_800_000_000.0


def test_a_token_names_its_key_until_it_expires() -> None:
    tokens = AccessTokens(SECRET, lifetime_s=3600)
    issued = tokens.issue(42, now=NOW)
    assert issued.expires_in == 3600 and AccessTokens.looks_like(issued.token)
    assert tokens.key_id(issued.token, now=NOW + 3599) == 42
    assert tokens.key_id(issued.token, now=NOW + 3600) is None


@pytest.mark.parametrize(
    "change",
    [
        lambda t: t.replace("bvat_42_", "bvat_43_"),  # another key under the same signature
        lambda t: t[:-1] + ("0" if t[-1] != "0" else "1"),
        lambda t: t.upper(),
        lambda t: t + "0",
        lambda t: "bvat_42",
    ],
)
def test_a_changed_token_names_no_key(change: Callable[[str], str]) -> None:
    tokens = AccessTokens(SECRET, lifetime_s=3600)
    token = tokens.issue(42, now=NOW).token
    assert tokens.key_id(change(token), now=NOW) is None


def test_another_secret_does_not_accept_the_token_and_short_secrets_are_refused() -> None:
    token = AccessTokens(SECRET, 60).issue(1, now=NOW).token
    assert AccessTokens(b"t" * 32, 60).key_id(token, now=NOW) is None
    with pytest.raises(ValueError, match="at least 16 bytes"):
        AccessTokens(b"short", 60)


# A real certificate's bytes are not needed to check the arithmetic: any DER payload will do.
DER = bytes(range(256)) * 3
PEM = ssl.DER_cert_to_PEM_cert(DER).encode()
EXPECTED = hashlib.sha256(DER).hexdigest()


def test_the_fingerprint_is_the_sha256_of_the_der_bytes() -> None:
    assert fingerprint(PEM) == EXPECTED
    assert fingerprint(b"leading text\n" + PEM + b"trailing") == EXPECTED
    with pytest.raises(ValueError, match="no PEM certificate"):
        fingerprint(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")


@pytest.mark.parametrize(
    "header",
    [
        base64.b64encode(PEM).decode(),  # BitMind's base64 PEM
        quote(PEM.decode()),  # nginx $ssl_client_escaped_cert
        PEM.decode().replace("\n", ""),  # the PEM on one line
    ],
)
def test_every_header_form_gives_the_same_fingerprint(header: str) -> None:
    assert header_fingerprint(header) == EXPECTED


@pytest.mark.parametrize("header", ["", "%%", "bm90IGEgY2VydA==", base64.b64encode(DER).decode()])
def test_a_header_without_a_certificate_has_no_fingerprint(header: str) -> None:
    assert header_fingerprint(header) is None
