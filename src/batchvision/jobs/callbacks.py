"""Job-completion webhooks: a signed POST to a client-chosen URL, retried with backoff.

Signing: the receiver gets ``X-Batchvision-Timestamp`` (unix seconds) and
``X-Batchvision-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>." + body)>``. The timestamp is
inside the MAC so that a captured delivery cannot be replayed later than the receiver's tolerance
(:func:`verify_callback`), and it is fresh on every attempt so that a retry is not rejected as
stale. ``v1=`` names the scheme so that it can change without breaking receivers.

Safety: the URL is client-controlled, exactly like an image URL, so delivery goes through the
same checks as :mod:`batchvision.intake.fetch` (re-used, not copied): every resolved address must
be public unless the host is in ``allow_hosts``, and the request goes to the checked address.
Redirects are not followed: a 3xx would let a receiver bounce our signed POST to another target.

Delivery never raises for network or HTTP trouble: a webhook is a courtesy on top of the job's
own status, and a broken receiver must not fail the job. Failures are logged with the URL's
origin only (paths and queries of webhook URLs often carry tokens), never with the secret.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import hmac
import logging
import random
import re
import time
from dataclasses import dataclass

import httpx

from batchvision.core.errors import BatchVisionError, ErrorCode
from batchvision.core.netguard import open_pinned, parse_url, resolve_checked

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Batchvision-Signature"
TIMESTAMP_HEADER = "X-Batchvision-Timestamp"

_SCHEME = "v1="
_MAX_URL_CHARS = 2048
_USER_AGENT = "batchvision-callback/1"
_TIMESTAMP = re.compile(r"[0-9]{1,15}", re.ASCII)
_SIGNATURE = re.compile(re.escape(_SCHEME) + r"([0-9a-fA-F]{64})", re.ASCII)
# Worth another try: the receiver (or something in front of it) is busy, restarting or slow.
_RETRY_STATUSES = frozenset({408, 429})


@dataclass(frozen=True)
class CallbackPolicy:
    """How hard to try delivering one callback."""

    attempts: int = 5  # total tries, the first included
    base_delay_s: float = 1.0  # backoff before try n+1: base * 2**(n-1), capped, with jitter
    max_delay_s: float = 60.0
    timeout_s: float = 10.0  # per attempt: DNS, connect, send and the response status
    # Lower-case names or IP literals exempt from the public-address check, as in FetchPolicy.
    allow_hosts: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if self.base_delay_s < 0 or self.max_delay_s < 0 or self.timeout_s <= 0:
            raise ValueError("delays must not be negative and timeout_s must be positive")


class _Outcome(enum.Enum):
    DELIVERED = enum.auto()
    RETRY = enum.auto()
    GIVE_UP = enum.auto()


def sign_callback(secret: bytes, timestamp: int, body: bytes) -> str:
    """The signature header value: ``v1=`` + hex HMAC-SHA256 over ``"<timestamp>." + body``.

    An empty secret is refused (ValueError): anyone could forge its signatures.
    """
    if not secret:
        raise ValueError("callback signing secret must not be empty")
    return _SCHEME + _mac(secret, str(timestamp), body)


def verify_callback(
    secret: bytes,
    timestamp: str | None,
    signature: str | None,
    body: bytes,
    *,
    tolerance_s: int = 300,
    now: int | None = None,
) -> bool:
    """True only for a signature made by :func:`sign_callback` for exactly this timestamp and
    body, with the timestamp within ``tolerance_s`` of ``now`` (either side, for clock skew).

    For receivers (and tests). Never raises: missing or malformed input is simply False.
    """
    if not isinstance(secret, bytes) or not secret or not isinstance(body, bytes):
        return False
    if not isinstance(timestamp, str) or not _TIMESTAMP.fullmatch(timestamp):
        return False
    match = _SIGNATURE.fullmatch(signature) if isinstance(signature, str) else None
    if match is None:
        return False
    current = int(time.time()) if now is None else now
    # The MAC is compared before the clock, so timing says nothing about which check failed.
    valid = hmac.compare_digest(_mac(secret, timestamp, body), match.group(1).lower())
    return valid and abs(current - int(timestamp)) <= tolerance_s


def _mac(secret: bytes, timestamp: str, body: bytes) -> str:
    return hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()


def check_callback_url(url: str) -> None:
    """Refuse, at job submission, a callback URL that could never be delivered to.

    Only the URL's form is checked (absolute http/https, a host, no userinfo, at most 2048
    printable characters) so that the client hears about a typo now rather than never. Where
    the URL points is checked at delivery, against the DNS answers of that moment.
    Raises :class:`BatchVisionError` with ``INVALID_PARAMETER``.
    """
    if not isinstance(url, str) or len(url) > _MAX_URL_CHARS or not url.isprintable():
        raise _invalid(f"must be a URL of at most {_MAX_URL_CHARS} printable characters")
    try:
        parse_url(url)
    except BatchVisionError as exc:
        raise _invalid(exc.message) from None


def _invalid(reason: str) -> BatchVisionError:
    return BatchVisionError(ErrorCode.INVALID_PARAMETER, f"callback_url: {reason}")


async def deliver_callback(url: str, body: bytes, secret: bytes, policy: CallbackPolicy) -> bool:
    """POST ``body`` (JSON) to ``url``, signed; True once the receiver answers 2xx.

    Retries with exponential backoff on transport errors, timeouts, DNS failures, 408, 429 and
    5xx; gives up at once on other statuses (3xx included: redirects are not followed) and on a
    URL that is malformed or points at a non-public address. Never raises for any of these
    (an empty ``secret`` is a programming error and raises ValueError).
    """
    try:
        target = parse_url(url)
    except BatchVisionError as exc:
        log.warning("callback not sent: %s", exc.message)
        return False
    origin = _origin(target)
    for attempt in range(1, policy.attempts + 1):
        if attempt > 1:
            await asyncio.sleep(_backoff_s(attempt - 1, policy))
        outcome = await _attempt(target, body, secret, policy)
        if outcome is not _Outcome.RETRY:
            return outcome is _Outcome.DELIVERED
    log.warning("callback to %s failed; gave up after %d attempts", origin, policy.attempts)
    return False


def _backoff_s(failures: int, policy: CallbackPolicy) -> float:
    """Exponential delay after ``failures`` failed tries, capped, with "equal jitter": between
    half and all of it, so that many jobs failing together do not retry in lockstep."""
    delay = min(policy.max_delay_s, policy.base_delay_s * 2 ** (failures - 1))
    return random.uniform(delay / 2, delay)  # noqa: S311 - timing jitter, not a secret


async def _attempt(url: httpx.URL, body: bytes, secret: bytes, policy: CallbackPolicy) -> _Outcome:
    """One try: resolve and check the host afresh (DNS may have changed), then POST."""
    origin = _origin(url)
    try:
        async with asyncio.timeout(policy.timeout_s):
            status = await _post(url, body, secret, policy)
    except TimeoutError:
        log.warning("callback to %s timed out after %.1f s", origin, policy.timeout_s)
        return _Outcome.RETRY
    except BatchVisionError as exc:
        # URL_NOT_ALLOWED is about where the URL points, which a retry will not change;
        # FETCH_FAILED (DNS, connect, TLS, protocol) may well be transient.
        log.warning("callback to %s failed: %s", origin, exc.message)
        return _Outcome.GIVE_UP if exc.code is ErrorCode.URL_NOT_ALLOWED else _Outcome.RETRY
    return _classify(status, origin)


async def _post(url: httpx.URL, body: bytes, secret: bytes, policy: CallbackPolicy) -> int:
    addresses = await resolve_checked(url, policy.allow_hosts)
    timestamp = int(time.time())
    headers = {
        "User-Agent": _USER_AGENT,
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign_callback(secret, timestamp, body),
    }
    async with open_pinned(
        url, addresses, timeout_s=policy.timeout_s, headers=headers, method="POST", content=body
    ) as response:
        # Only the status matters; the body is never read (it could be anything, any size).
        return response.status_code


def _classify(status: int, origin: str) -> _Outcome:
    if 200 <= status < 300:
        return _Outcome.DELIVERED
    if status in _RETRY_STATUSES or 500 <= status < 600:
        log.warning("callback to %s answered HTTP %d (retryable)", origin, status)
        return _Outcome.RETRY
    note = " (redirects are not followed)" if 300 <= status < 400 else ""
    log.warning("callback to %s answered HTTP %d%s; not retried", origin, status, note)
    return _Outcome.GIVE_UP


def _origin(url: httpx.URL) -> str:
    """Scheme, host and port only: what a log may show of a URL that may carry a token."""
    return f"{url.scheme}://{url.netloc.decode('ascii')}"
