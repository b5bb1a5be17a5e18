"""Outgoing requests to client-chosen URLs without letting the client reach our network.

Threat model: the URL, every redirect target and every DNS answer are attacker-controlled.
Defences, in order:

* only ``http``/``https``; no userinfo; the host must be non-empty (:func:`parse_url`);
* the host is resolved once per hop and *every* resolved address must be globally routable
  (see :func:`is_public_address`), unless the host is explicitly allowed (:func:`resolve_checked`);
* the connection goes to the address that was checked (the URL host is rewritten to the IP
  literal, the original name travels in ``Host`` and, for https, as SNI and the name the
  certificate is verified against), so DNS rebinding between check and connect is impossible
  (:func:`open_pinned`).

These live in the core so that every outgoing request to a client-chosen URL — image fetching
(``intake/fetch.py``) and job-completion callbacks (``jobs/callbacks.py``) — gets exactly the
same defences rather than a copy of them.

Error codes: anything about *where* the URL points (scheme, userinfo, malformed URL or host,
non-public address) is ``URL_NOT_ALLOWED``; anything that goes wrong while talking to an
allowed target (DNS failure, connect/TLS/protocol errors, timeouts) is ``FETCH_FAILED``.
Messages never contain resolved addresses (they could reveal internal DNS) or exception text.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager

import httpx

from batchvision.core.errors import BatchVisionError, ErrorCode

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


_ALLOWED_SCHEMES = frozenset({"http", "https"})


_MAX_URL_CHARS = 8192

# Blocked explicitly rather than trusting ipaddress.is_global alone: its tables changed between
# Python patch releases (e.g. 192.0.0.0/24 handling), and we want the same answer everywhere.
_BLOCKED_V4 = tuple(
    ipaddress.IPv4Network(n)
    for n in (
        "0.0.0.0/8",  # "this network"
        "10.0.0.0/8",
        "100.64.0.0/10",  # CGNAT
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local, cloud metadata
        "172.16.0.0/12",
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # TEST-NET-1
        "192.88.99.0/24",  # deprecated 6to4 relay anycast
        "192.168.0.0/16",
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # TEST-NET-2
        "203.0.113.0/24",  # TEST-NET-3
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, includes 255.255.255.255
    )
)
# Only 2000::/3 is allocated as global unicast; everything else (ULA, link-local, site-local,
# multicast, IPv4-compatible, discard, local-use NAT64 ...) is refused by default.
_GLOBAL_UNICAST_V6 = ipaddress.IPv6Network("2000::/3")
_BLOCKED_V6 = tuple(
    ipaddress.IPv6Network(n)
    for n in (
        "2001::/23",  # IETF protocol assignments, includes Teredo 2001::/32
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation (RFC 9637)
    )
)
_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")


def is_public_address(ip: IPAddress) -> bool:
    """True if ``ip`` is globally routable unicast, looking through IPv6 wrappers of IPv4."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            return is_public_address(embedded)
        if ip.scope_id is not None or ip not in _GLOBAL_UNICAST_V6:
            return False
        blocked: tuple[ipaddress.IPv4Network, ...] | tuple[ipaddress.IPv6Network, ...]
        blocked = _BLOCKED_V6
    else:
        blocked = _BLOCKED_V4
    if any(ip in net for net in blocked):
        return False
    # Belt and braces: the stdlib flags may know about assignments newer than our tables.
    return ip.is_global and not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address that traffic to ``ip`` ends up at, for wrappers that carry one."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64_WELL_KNOWN:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    # Teredo is not unwrapped: 2001::/32 is refused outright as part of 2001::/23.
    return None


def parse_url(url: str) -> httpx.URL:
    """Parse and syntax-check a client-supplied URL; raises ``URL_NOT_ALLOWED`` if unfit.

    Only the URL's form is checked here (scheme, userinfo, host present, port, length); where
    it points is :func:`resolve_checked`'s job.
    """
    # httpx parses here because httpx sends the request: no parser differential between the
    # URL we check and the URL we connect to.
    if len(url) > _MAX_URL_CHARS:
        raise url_not_allowed("URL is too long")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError, TypeError):
        raise url_not_allowed("URL is malformed") from None
    if parsed.scheme not in _ALLOWED_SCHEMES:
        raise url_not_allowed("only http and https URLs may be fetched")
    if parsed.userinfo:
        raise url_not_allowed("URLs with credentials are not allowed")
    if not parsed.raw_host:
        raise url_not_allowed("URL has no host")
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise url_not_allowed("URL has an invalid port")
    return parsed


def normalize_host(host: str) -> str:
    return host.strip().lower().rstrip(".")


def _host_of(url: httpx.URL) -> str:
    # raw_host is the IDNA (ASCII) form: what DNS, SNI and the certificate check expect.
    return url.raw_host.decode("ascii")


async def resolve_checked(url: httpx.URL, allow_hosts: frozenset[str]) -> list[IPAddress]:
    """Resolve the URL's host once; refuse unless every address is public or the host is allowed.

    ``allow_hosts`` holds normalised (lower-case, no trailing dot) names or IP literals. Raises
    ``URL_NOT_ALLOWED`` for a forbidden or invalid host, ``FETCH_FAILED`` if DNS fails. Connect
    only to the addresses returned (see :func:`open_pinned`), never to the name again.
    """
    host = _host_of(url)
    addresses = await _resolve(host, url.port or _default_port(url))
    if normalize_host(host) in allow_hosts:
        return addresses
    # Any non-public answer refuses the whole host: otherwise an attacker could mix a public
    # and a private record and hope we (or a retry) pick the private one.
    if not all(is_public_address(ip) for ip in addresses):
        raise url_not_allowed(f"host '{host}' resolves to a non-public address")
    return addresses


async def _resolve(host: str, port: int) -> list[IPAddress]:
    literal = _parse_ip(host)
    if literal is not None:
        return [literal]
    if not _HOST_NAME.fullmatch(host):
        # Never hand DNS a name no resolver should see (spaces, percent-escapes, control bytes).
        raise url_not_allowed(f"host '{host}' is not a valid host name")
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
    except (UnicodeError, ValueError):
        raise url_not_allowed(f"host '{host}' is not a valid host name") from None
    except OSError:
        raise fetch_failed(f"could not resolve host '{host}'") from None
    addresses = [
        ip
        for family, *_, sockaddr in infos
        if family in (socket.AF_INET, socket.AF_INET6)
        and (ip := _parse_ip(str(sockaddr[0]))) is not None
    ]
    if not addresses:
        raise fetch_failed(f"could not resolve host '{host}'")
    return addresses


_HOST_NAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,251}[A-Za-z0-9_.])?")


def _parse_ip(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _default_port(url: httpx.URL) -> int:
    return 443 if url.scheme == "https" else 80


@asynccontextmanager
async def open_pinned(
    url: httpx.URL,
    addresses: list[IPAddress],
    *,
    timeout_s: float,
    headers: Mapping[str, str],
    method: str = "GET",
    content: bytes | None = None,
) -> AsyncIterator[httpx.Response]:
    """A streaming request to the first of ``addresses`` (from :func:`resolve_checked`) that
    accepts a connection, with the real name in ``Host`` and SNI. Redirects are never followed:
    the caller decides, after checking the target again. Transport problems raise
    ``FETCH_FAILED`` without exception text.
    """
    # A fresh client per hop: no cookies carried between hosts, and no pooled TLS connection
    # (keyed by IP, verified for another name) reused for a different host on the same IP;
    # trust_env=False so that no proxy from the environment sees (or re-resolves) the request.
    async with httpx.AsyncClient(
        follow_redirects=False, trust_env=False, timeout=timeout_s
    ) as client:
        requests = (_build_request(method, url, ip, headers, content) for ip in addresses)
        response = await _send_first(client, host=_host_of(url), requests=requests)
        try:
            yield response
        finally:
            await response.aclose()


async def _send_first(
    client: httpx.AsyncClient, *, host: str, requests: Iterable[httpx.Request]
) -> httpx.Response:
    for request in requests:
        try:
            return await client.send(request, stream=True)
        except httpx.ConnectError:
            continue  # like any client: try the next address the name resolved to
        except httpx.TimeoutException:
            raise fetch_failed("fetching the URL timed out") from None
        except httpx.HTTPError:
            raise fetch_failed(f"error while fetching from host '{host}'") from None
    raise fetch_failed(f"could not connect to host '{host}'")


def _build_request(
    method: str,
    url: httpx.URL,
    ip: IPAddress,
    headers: Mapping[str, str],
    content: bytes | None,
) -> httpx.Request:
    return httpx.Request(
        method,
        url.copy_with(host=str(ip)),
        headers={**headers, "Host": url.netloc.decode("ascii")},
        content=content,
        # SNI and certificate verification use the real name, not the IP we connect to.
        extensions={"sni_hostname": _host_of(url)} if url.scheme == "https" else {},
    )


def url_not_allowed(message: str) -> BatchVisionError:
    return BatchVisionError(ErrorCode.URL_NOT_ALLOWED, message)


def fetch_failed(message: str) -> BatchVisionError:
    return BatchVisionError(ErrorCode.FETCH_FAILED, message)
