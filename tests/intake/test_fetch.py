"""Tests for the SSRF-safe URL fetcher.

Real sockets are only ever opened to 127.0.0.1: an autouse guard wraps httpx's send and
raises before any request to another address leaves the process, and the refusal tests
additionally assert that no request was even built.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from batchvision.core.errors import BatchVisionError, ErrorCode
from batchvision.core.netguard import is_public_address
from batchvision.core.settings import Settings
from batchvision.intake.fetch import FetchPolicy, fetch_url
from local_http import Route, RouteHandler, serve_routes

IMG = bytes(range(256)) * 4  # 1024 bytes
MAX_BYTES = 4096
BIG = 64 * 1024


def _slow(h: RouteHandler) -> None:
    h.send_response(200)
    h.send_header("Content-Length", "100")
    h.end_headers()
    for _ in range(100):  # 10 s in all, far past the 1 s deadline
        h.wfile.write(b"x")
        h.wfile.flush()
        time.sleep(0.1)


def _big_chunked(h: RouteHandler) -> None:
    h.send_response(200)
    h.send_header("Transfer-Encoding", "chunked")
    h.end_headers()
    chunk = b"y" * 1024
    for _ in range(BIG // len(chunk)):
        h.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        h.wfile.flush()
    h.wfile.write(b"0\r\n\r\n")


def _big_close(h: RouteHandler) -> None:
    # No Content-Length, no chunking: the body runs until the connection closes.
    h.close_connection = True
    h.send_response(200)
    h.send_header("Connection", "close")
    h.end_headers()
    h.wfile.write(b"z" * BIG)


_ROUTES: dict[str, Route] = {
    "/img": lambda h: h.send(200, IMG, Content_Type="image/png"),
    "/echo-host": lambda h: h.send(200, (h.headers.get("Host") or "").encode()),
    "/redirect-ok": lambda h: h.redirect("/img"),
    "/redirect-chain": lambda h: h.redirect("/redirect-ok"),
    "/redirect-loop": lambda h: h.redirect("/redirect-loop"),
    "/redirect-to-refused": lambda h: h.redirect("http://169.254.169.254/latest/meta-data/"),
    "/redirect-to-private": lambda h: h.redirect("http://10.0.0.1/x"),
    "/redirect-to-ftp": lambda h: h.redirect("ftp://example.com/x"),
    "/redirect-no-location": lambda h: h.send(302, b""),
    "/slow": _slow,
    "/big": lambda h: h.send(200, b"b" * BIG),
    "/big-chunked": _big_chunked,
    "/big-close": _big_close,
    "/gzip": lambda h: h.send(200, b"\x1f\x8b", Content_Encoding="gzip"),
    "/500": lambda h: h.send(500, b"secret stack trace"),
}


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    with serve_routes(_ROUTES) as url:
        yield url


class _Blocked(Exception):
    """Raised instead of sending a request to anything but 127.0.0.1."""


@pytest.fixture(autouse=True)
def sent(monkeypatch: pytest.MonkeyPatch) -> list[httpx.Request]:
    """Every request httpx was asked to send; non-loopback ones are stopped here."""
    requests: list[httpx.Request] = []
    original = httpx.AsyncClient.send

    async def guarded(self: httpx.AsyncClient, request: httpx.Request, **kw: Any) -> Any:
        requests.append(request)
        if request.url.host != "127.0.0.1":
            raise _Blocked(str(request.url))
        return await original(self, request, **kw)

    monkeypatch.setattr(httpx.AsyncClient, "send", guarded)
    return requests


def _policy(**overrides: Any) -> FetchPolicy:
    values: dict[str, Any] = {
        "timeout_s": 5.0,
        "max_bytes": MAX_BYTES,
        "max_redirects": 3,
        "allow_hosts": frozenset({"127.0.0.1"}),
    }
    values.update(overrides)
    return FetchPolicy(**values)


STRICT = _policy(allow_hosts=frozenset())


def _fetch(url: str, policy: FetchPolicy | None = None) -> bytes:
    return asyncio.run(fetch_url(url, policy or _policy()))


def _error(url: str, policy: FetchPolicy | None = None) -> BatchVisionError:
    with pytest.raises(BatchVisionError) as info:
        _fetch(url, policy)
    return info.value


def _fake_dns(monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[str]]) -> list[str]:
    """Make the event loop resolve names from ``answers``; returns the names looked up."""
    looked_up: list[str] = []
    original = asyncio.base_events.BaseEventLoop.getaddrinfo

    async def fake(self: Any, host: Any, port: Any, **kw: Any) -> Any:
        looked_up.append(host)
        if host not in answers:
            return await original(self, host, port, **kw)
        if not answers[host]:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            (
                socket.AF_INET6 if ":" in ip else socket.AF_INET,
                socket.SOCK_STREAM,
                socket.IPPROTO_TCP,
                "",
                (ip, port, 0, 0) if ":" in ip else (ip, port),
            )
            for ip in answers[host]
        ]

    monkeypatch.setattr(asyncio.base_events.BaseEventLoop, "getaddrinfo", fake)
    return looked_up


# --- happy paths -------------------------------------------------------------------------


def test_fetches_bytes(base: str) -> None:
    assert _fetch(f"{base}/img") == IMG


def test_follows_relative_redirects(base: str) -> None:
    assert _fetch(f"{base}/redirect-ok") == IMG
    assert _fetch(f"{base}/redirect-chain") == IMG


def test_body_exactly_at_cap_is_accepted(base: str) -> None:
    assert _fetch(f"{base}/img", _policy(max_bytes=len(IMG))) == IMG


def test_connects_to_checked_address_with_original_host_header(
    base: str, monkeypatch: pytest.MonkeyPatch, sent: list[httpx.Request]
) -> None:
    looked_up = _fake_dns(monkeypatch, {"img.example": ["127.0.0.1"]})
    port = base.rsplit(":", 1)[1]
    policy = _policy(allow_hosts=frozenset({"img.example"}))

    assert _fetch(f"http://img.example:{port}/echo-host", policy) == f"img.example:{port}".encode()
    assert looked_up.count("img.example") == 1  # resolved once, never again by httpx
    assert [r.url.host for r in sent] == ["127.0.0.1"]


def test_https_uses_real_name_for_sni(
    base: str, monkeypatch: pytest.MonkeyPatch, sent: list[httpx.Request]
) -> None:
    _fake_dns(monkeypatch, {"tls.example": ["127.0.0.1"]})
    port = base.rsplit(":", 1)[1]
    policy = _policy(allow_hosts=frozenset({"tls.example"}))

    # The test server speaks plain HTTP, so the TLS handshake fails: a FETCH_FAILED.
    assert _error(f"https://tls.example:{port}/img", policy).code is ErrorCode.FETCH_FAILED
    (request,) = sent
    assert request.url.host == "127.0.0.1"
    assert request.headers["Host"] == f"tls.example:{port}"
    assert request.extensions["sni_hostname"] == "tls.example"


def test_public_name_is_sent_to_the_resolved_ip(
    monkeypatch: pytest.MonkeyPatch, sent: list[httpx.Request]
) -> None:
    _fake_dns(monkeypatch, {"public.example": ["8.8.8.8"]})
    # The guard stops the request before it leaves; we only inspect what would be sent.
    with pytest.raises(_Blocked):
        _fetch("https://public.example/a.png?x=1", STRICT)
    (request,) = sent
    assert str(request.url) == "https://8.8.8.8/a.png?x=1"
    assert request.headers["Host"] == "public.example"
    assert request.extensions["sni_hostname"] == "public.example"
    assert request.headers["Accept-Encoding"] == "identity"


def test_from_settings() -> None:
    settings = Settings(
        fetch_timeout_s=3.5,
        fetch_max_redirects=2,
        max_image_bytes=1234,
        url_allow_hosts=["Images.Internal."],
    )
    assert FetchPolicy.from_settings(settings) == FetchPolicy(
        timeout_s=3.5,
        max_bytes=1234,
        max_redirects=2,
        allow_hosts=frozenset({"images.internal"}),
    )


# --- failures while fetching from an allowed host ----------------------------------------


def test_redirect_to_metadata_is_refused_before_connecting(
    base: str, sent: list[httpx.Request]
) -> None:
    assert _error(f"{base}/redirect-to-refused").code is ErrorCode.URL_NOT_ALLOWED
    assert {r.url.host for r in sent} == {"127.0.0.1"}


def test_redirect_to_private_is_refused_before_connecting(
    base: str, sent: list[httpx.Request]
) -> None:
    assert _error(f"{base}/redirect-to-private").code is ErrorCode.URL_NOT_ALLOWED
    assert {r.url.host for r in sent} == {"127.0.0.1"}


def test_redirect_to_other_scheme_is_refused(base: str) -> None:
    assert _error(f"{base}/redirect-to-ftp").code is ErrorCode.URL_NOT_ALLOWED


def test_redirect_loop_fails(base: str, sent: list[httpx.Request]) -> None:
    err = _error(f"{base}/redirect-loop")
    assert err.code is ErrorCode.FETCH_FAILED
    assert "redirects" in err.message
    assert len(sent) == 4  # the original request plus max_redirects=3 hops


def test_redirects_disabled(base: str) -> None:
    assert _error(f"{base}/redirect-ok", _policy(max_redirects=0)).code is ErrorCode.FETCH_FAILED


def test_redirect_without_location_fails(base: str) -> None:
    assert _error(f"{base}/redirect-no-location").code is ErrorCode.FETCH_FAILED


def test_deadline_covers_the_body(base: str) -> None:
    start = time.monotonic()
    err = _error(f"{base}/slow", _policy(timeout_s=1.0))
    assert err.code is ErrorCode.FETCH_FAILED
    assert "timed out" in err.message
    assert time.monotonic() - start < 3


@pytest.mark.parametrize("path", ["/big", "/big-chunked", "/big-close"])
def test_body_over_cap_is_too_large(base: str, path: str) -> None:
    assert _error(f"{base}{path}").code is ErrorCode.IMAGE_TOO_LARGE


def test_body_over_cap_without_declared_length_streams_until_cap(base: str) -> None:
    # Same cap as the image itself minus one: only the streaming count can catch it.
    err = _error(f"{base}/big-chunked", _policy(max_bytes=BIG - 1))
    assert err.code is ErrorCode.IMAGE_TOO_LARGE


@pytest.mark.parametrize("path", ["/404", "/500"])
def test_error_status_fails_without_leaking_body(base: str, path: str) -> None:
    err = _error(f"{base}{path}")
    assert err.code is ErrorCode.FETCH_FAILED
    assert path[1:] in err.message
    assert "secret" not in err.message


def test_compressed_body_is_refused(base: str) -> None:
    assert _error(f"{base}/gzip").code is ErrorCode.FETCH_FAILED


def test_connection_refused_fails() -> None:
    with socket.socket() as s:  # a port that was free a moment ago and has no listener
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert _error(f"http://127.0.0.1:{port}/img").code is ErrorCode.FETCH_FAILED


def test_dns_failure_fails(monkeypatch: pytest.MonkeyPatch, sent: list[httpx.Request]) -> None:
    _fake_dns(monkeypatch, {"nowhere.example": []})
    assert _error("http://nowhere.example/img").code is ErrorCode.FETCH_FAILED
    assert sent == []


# --- refused targets: no request may be built at all -------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/img",
        "http://localhost:{port}/img",
        "http://[::1]:{port}/",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://192.168.1.1/",
        "http://100.64.0.1/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:a9fe:a9fe]/",
        "http://[64:ff9b::a9fe:a9fe]/",
        "http://[2002:7f00:1::1]/",
        "http://[fe80::1]/",
        "http://[fd00::1]/",
        "http://2130706433/",
        "http://0x7f.1/",
        "http://0177.0.0.1/",
        "http://0.0.0.0/",
        "http://0/",
        "https://127.0.0.1/",
        "http://LOCALHOST:{port}/",
    ],
)
def test_non_public_targets_are_refused(url: str, base: str, sent: list[httpx.Request]) -> None:
    port = base.rsplit(":", 1)[1]
    err = _error(url.format(port=port), STRICT)
    assert err.code is ErrorCode.URL_NOT_ALLOWED
    assert sent == []


def test_any_private_answer_refuses_the_host(
    monkeypatch: pytest.MonkeyPatch, sent: list[httpx.Request]
) -> None:
    _fake_dns(monkeypatch, {"mixed.example": ["8.8.8.8", "10.0.0.1"]})
    err = _error("http://mixed.example/", STRICT)
    assert err.code is ErrorCode.URL_NOT_ALLOWED
    assert "10.0.0.1" not in err.message  # resolved addresses are not disclosed
    assert sent == []


def test_allow_hosts_matches_the_name_not_its_address(base: str, sent: list[httpx.Request]) -> None:
    port = base.rsplit(":", 1)[1]
    policy = _policy(allow_hosts=frozenset({"localhost"}))
    assert _error(f"http://127.0.0.1:{port}/img", policy).code is ErrorCode.URL_NOT_ALLOWED
    assert sent == []


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/a.png",
        "file:///etc/passwd",
        "gopher://example.com/",
        "data:image/png;base64,AAAA",
        "//example.com/a.png",
        "example.com/a.png",
        "not a url",
        "",
        "http:///a.png",
        "http://user:pass@example.com/a.png",
        "http://user@example.com/a.png",
        "http://[::1/",
        "http://example.com:99999/",
        "http://example.com:0/",
        "http://" + "a" * 9000 + ".com/",
    ],
)
def test_bad_urls_are_refused(url: str, sent: list[httpx.Request]) -> None:
    assert _error(url, STRICT).code is ErrorCode.URL_NOT_ALLOWED
    assert sent == []


# --- address classification --------------------------------------------------------------

PUBLIC = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.215.14",
    "2606:4700:4700::1111",
    "2001:4860:4860::8888",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",
    "2002:808:808::1",
]

NOT_PUBLIC = [
    "0.0.0.0",
    "0.1.2.3",
    "10.0.0.1",
    "100.64.0.1",
    "100.127.255.255",
    "127.0.0.1",
    "127.255.255.254",
    "169.254.169.254",
    "172.16.0.1",
    "172.31.255.255",
    "192.0.0.1",
    "192.0.0.9",
    "192.0.2.1",
    "192.88.99.1",
    "192.168.1.1",
    "198.18.0.1",
    "198.19.255.255",
    "198.51.100.1",
    "203.0.113.1",
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
    "::",
    "::1",
    "::127.0.0.1",
    "::ffff:127.0.0.1",
    "::ffff:169.254.169.254",
    "::ffff:10.0.0.1",
    "::ffff:0.0.0.0",
    "64:ff9b::7f00:1",
    "64:ff9b::a9fe:a9fe",
    "64:ff9b:1::1",
    "100::1",
    "2001::1",
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",
    "2001:db8::1",
    "2002:7f00:1::1",
    "2002:a9fe:a9fe::1",
    "2002:a00:1::",
    "3fff::1",
    "fc00::1",
    "fd12:3456::1",
    "fe80::1",
    "fe80::1%eth0",
    "fec0::1",
    "ff02::1",
    "ff0e::1",
]


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses(address: str) -> None:
    assert is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", NOT_PUBLIC)
def test_non_public_addresses(address: str) -> None:
    assert not is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("url", ["http://exa mple.com/", "http://a%20b.example/", "http://a\tb/"])
def test_malformed_host_names_are_refused_before_any_lookup(url: str) -> None:
    policy = FetchPolicy(timeout_s=1, max_bytes=1000, max_redirects=0, allow_hosts=frozenset())
    with pytest.raises(BatchVisionError) as caught:
        asyncio.run(fetch_url(url, policy))
    assert caught.value.code is ErrorCode.URL_NOT_ALLOWED
