"""Fetch image or video bytes from a client-supplied URL without letting the client reach our
network.

Threat model: the URL, every redirect target and every DNS answer are attacker-controlled.
Defences, in order:

* only ``http``/``https``; no userinfo; the host must be non-empty;
* the host is resolved once per hop and *every* resolved address must be globally routable
  (see :func:`is_public_address`), unless the host is listed in ``FetchPolicy.allow_hosts``;
* the connection goes to the address that was checked (the URL host is rewritten to the IP
  literal, the original name travels in ``Host`` and, for https, as SNI and the name the
  certificate is verified against), so DNS rebinding between check and connect is impossible;
* redirects are followed by hand, re-running every check on each hop;
* one wall-clock deadline covers DNS, all hops and the body; the body is capped while streaming.

The URL check, the checked resolution and the pinned connection are public (:func:`parse_url`,
:func:`resolve_checked`, :func:`open_pinned`) so that other outgoing requests to client-chosen
URLs (job-completion callbacks) get exactly the same defences rather than a copy of them.

Error codes: anything about *where* the URL points (scheme, userinfo, malformed URL or host,
non-public address) is ``URL_NOT_ALLOWED``; anything that goes wrong while talking to an
allowed target (DNS failure, connect/TLS/protocol errors, timeouts, non-2xx status, too many
redirects, unsupported content-encoding) is ``FETCH_FAILED``; a body over the cap is
``IMAGE_TOO_LARGE`` (``VIDEO_TOO_LARGE`` for a video, which ``fetch_video`` streams to a
temporary file instead of memory). Messages never contain resolved addresses (they could
reveal internal DNS), exception text or response bodies.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import httpx

from batchvision.core.errors import BatchVisionError, ErrorCode
from batchvision.core.netguard import (
    fetch_failed,
    normalize_host,
    open_pinned,
    parse_url,
    resolve_checked,
    url_not_allowed,
)
from batchvision.core.settings import Settings
from batchvision.intake.video import spool, video_too_large

T = TypeVar("T")

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_FETCH_HEADERS = {
    "User-Agent": "batchvision-fetch/1",
    "Accept": "image/*, */*;q=0.5",
    # Identity only: a compressed body could expand far beyond max_bytes inside one decoded
    # chunk before we get to count it.
    "Accept-Encoding": "identity",
}


class ByteTally:
    """Bytes fetched so far for one request, against its cap: 64 URLs of 20 MB each in a 5 KB
    body must not make the server hold 1.3 GB (each URL alone is within max_image_bytes)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def add(self, nbytes: int) -> None:
        self.used += nbytes
        if self.used > self.limit:
            raise BatchVisionError(
                ErrorCode.IMAGE_TOO_LARGE,
                "the URL images of this request together exceed the "
                f"{self.limit}-byte limit (max_fetched_bytes_per_request)",
            )


@dataclass(frozen=True)
class FetchPolicy:
    """Limits for one URL fetch."""

    timeout_s: float  # total deadline: DNS, every redirect hop and the body
    max_bytes: int  # body cap, enforced while streaming
    max_redirects: int
    allow_hosts: frozenset[str]  # lower-case names or IP literals exempt from the address check

    @classmethod
    def from_settings(cls, settings: Settings) -> FetchPolicy:
        return cls(
            timeout_s=settings.fetch_timeout_s,
            max_bytes=settings.max_image_bytes,
            max_redirects=settings.fetch_max_redirects,
            allow_hosts=frozenset(normalize_host(h) for h in settings.url_allow_hosts),
        )

    @classmethod
    def for_videos(cls, settings: Settings) -> FetchPolicy:
        """A video may be far larger than an image and take minutes to download."""
        return replace(
            cls.from_settings(settings),
            timeout_s=settings.video_fetch_timeout_s,
            max_bytes=settings.video_max_bytes,
        )


async def fetch_url(url: str, policy: FetchPolicy, tally: ByteTally | None = None) -> bytes:
    """Download ``url`` under ``policy``; raises :class:`BatchVisionError` on any failure.

    Codes: ``URL_NOT_ALLOWED`` for a bad or forbidden target, ``FETCH_FAILED`` for transport
    problems, non-2xx responses, redirect overflow and the deadline, ``IMAGE_TOO_LARGE`` for a
    body over ``policy.max_bytes`` or one that takes ``tally`` (the request's) past its limit.
    """
    counted = tally or ByteTally(policy.max_bytes)

    async def body(response: httpx.Response) -> bytes:
        return await _read_capped(response, policy.max_bytes, counted)

    return await _deadline(_fetch(url, policy, body), policy.timeout_s)


async def fetch_video(url: str, policy: FetchPolicy, directory: Path) -> Path:
    """Download the video at ``url`` under ``policy`` into a new temporary file in
    ``directory`` (the caller deletes it), streamed to disk with ``policy.max_bytes`` checked
    as bytes arrive (``VIDEO_TOO_LARGE``); the same defences and codes as ``fetch_url``."""

    async def body(response: httpx.Response) -> Path:
        _check_encoding(response)
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > policy.max_bytes:
            raise video_too_large(f"the video at the URL is over {policy.max_bytes} bytes")
        return await spool(_body_chunks(response), directory, policy.max_bytes)

    return await _deadline(_fetch(url, policy, body), policy.timeout_s)


async def _deadline(fetching: Awaitable[T], timeout_s: float) -> T:
    try:
        async with asyncio.timeout(timeout_s):
            return await fetching
    except TimeoutError:
        raise fetch_failed("fetching the URL timed out") from None


async def _body_chunks(response: httpx.Response) -> AsyncIterator[bytes]:
    try:
        async for chunk in response.aiter_bytes():
            yield chunk
    except httpx.TimeoutException:
        raise fetch_failed("fetching the URL timed out") from None
    except httpx.HTTPError:
        raise fetch_failed("connection failed while reading the response body") from None


def _check_encoding(response: httpx.Response) -> None:
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise fetch_failed("URL returned a compressed body (content-encoding is not supported)")


async def _fetch(
    url: str, policy: FetchPolicy, body: Callable[[httpx.Response], Awaitable[T]]
) -> T:
    current = parse_url(url)
    for _hop in range(policy.max_redirects + 1):
        addresses = await resolve_checked(current, policy.allow_hosts)
        async with open_pinned(
            current, addresses, timeout_s=policy.timeout_s, headers=_FETCH_HEADERS
        ) as response:
            if response.status_code in _REDIRECT_STATUSES:
                current = _redirect_target(current, response)
                continue
            if not 200 <= response.status_code < 300:
                raise fetch_failed(f"URL returned HTTP status {response.status_code}")
            return await body(response)
    raise fetch_failed(f"too many redirects (more than {policy.max_redirects})")


def _redirect_target(current: httpx.URL, response: httpx.Response) -> httpx.URL:
    location = response.headers.get("location")
    if not location:
        raise fetch_failed(f"redirect (HTTP {response.status_code}) without a Location header")
    try:
        joined = current.join(location)
    except (httpx.InvalidURL, ValueError):
        raise url_not_allowed("redirect points to a malformed URL") from None
    return parse_url(str(joined))


async def _read_capped(response: httpx.Response, max_bytes: int, tally: ByteTally) -> bytes:
    _check_encoding(response)
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(max_bytes)
    # A declared length is taken from the request's tally before the body is read, so that
    # concurrent fetches of one request do not all get part-way and then all fail together.
    counted = int(declared) if declared.isdigit() else 0
    tally.add(counted)
    chunks: list[bytes] = []
    received = 0
    async for chunk in _body_chunks(response):
        received += len(chunk)
        if received > max_bytes:
            raise _too_large(max_bytes)
        if received > counted:
            tally.add(received - counted)
            counted = received
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(max_bytes: int) -> BatchVisionError:
    return BatchVisionError(
        ErrorCode.IMAGE_TOO_LARGE, f"image at URL is larger than the {max_bytes}-byte limit"
    )
