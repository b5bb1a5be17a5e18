"""Images by URL through `POST /v1/analyze`, against a local HTTP server on 127.0.0.1.

No traffic may go anywhere but 127.0.0.1: every refusal below happens before a connection is
made, and an autouse guard stops (and records) any request the fetcher would send elsewhere.
"""

from __future__ import annotations

import base64
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from conftest import LiveServer, coco_image, make_settings, start_server
from local_http import Route, RouteHandler, serve_routes

GOOD = "000000000139.jpg"  # 161,811 bytes
MAX_IMAGE_BYTES = 200_000
HITS: list[str] = []  # paths the local image server was asked for


def _slow_body(h: RouteHandler) -> None:
    h.send_response(200)
    h.send_header("Content-Type", "image/jpeg")
    h.send_header("Content-Length", "100")
    h.end_headers()
    for _ in range(100):  # 5 s in all, far past the 1 s deadline
        h.wfile.write(b"x")
        h.wfile.flush()
        time.sleep(0.05)


def _slow_headers(h: RouteHandler) -> None:
    time.sleep(3)
    h.send(200, coco_image(GOOD), Content_Type="image/jpeg")


def _big_chunked(h: RouteHandler) -> None:
    h.send_response(200)
    h.send_header("Transfer-Encoding", "chunked")
    h.end_headers()
    chunk = b"y" * 16_384
    for _ in range(30):  # 480 kB, no Content-Length to refuse up front
        h.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    h.wfile.write(b"0\r\n\r\n")


ROUTES: dict[str, Route] = {
    "/coco.jpg": lambda h: h.send(200, coco_image(GOOD), Content_Type="image/jpeg"),
    "/redirect-ok": lambda h: h.redirect("/coco.jpg"),
    "/redirect-metadata": lambda h: h.redirect("http://169.254.169.254/latest/meta-data/"),
    "/redirect-private": lambda h: h.redirect("http://10.0.0.1/"),
    "/redirect-loop": lambda h: h.redirect("/redirect-loop"),
    "/slow": _slow_body,
    "/slow-headers": _slow_headers,
    "/big": lambda h: h.send(200, coco_image("000000000285.jpg"), Content_Type="image/jpeg"),
    "/big-chunked": _big_chunked,
    "/text": lambda h: h.send(200, b"<html>not an image</html>", Content_Type="text/html"),
    "/500": lambda h: h.send(500, b"Traceback (most recent call last): secret"),
}


@pytest.fixture(scope="module")
def images_base() -> Iterator[str]:
    with serve_routes(ROUTES, hits=HITS) as url:
        yield url


class _Blocked(Exception):
    pass


@pytest.fixture(autouse=True)
def sent(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Hosts the server's fetcher sent requests to; anything but 127.0.0.1 is stopped here."""
    hosts: list[str] = []
    original = httpx.AsyncClient.send

    async def guarded(self: httpx.AsyncClient, request: httpx.Request, **kw: Any) -> Any:
        hosts.append(request.url.host)
        if request.url.host != "127.0.0.1":
            raise _Blocked(str(request.url))
        return await original(self, request, **kw)

    monkeypatch.setattr(httpx.AsyncClient, "send", guarded)
    HITS.clear()
    return hosts


@pytest.fixture(scope="module")
def allow_local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server that may fetch from 127.0.0.1 (and only there, beyond public addresses)."""
    live = start_server(
        make_settings(
            tmp_path_factory.mktemp("urls-allow"),
            url_allow_hosts=["127.0.0.1"],
            fetch_timeout_s=1,
            max_image_bytes=MAX_IMAGE_BYTES,
        )
    )
    yield live
    live.stop()


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server with the default policy: only public addresses."""
    live = start_server(make_settings(tmp_path_factory.mktemp("urls-strict"), fetch_timeout_s=1))
    yield live
    live.stop()


def analyze_urls(live: LiveServer, urls: list[str], extra: list[Any] | None = None) -> Any:
    images: list[Any] = [{"url": url, "id": f"u{i}"} for i, url in enumerate(urls)]
    with live.client() as client:
        response = client.post("/v1/analyze", json={"images": images + (extra or [])})
    assert response.status_code == 200, response.text
    assert "Traceback" not in response.text
    return response.json()


def item_code(result: dict[str, Any]) -> str:
    assert result["status"] == "error", result
    [error] = result["errors"]
    assert "Traceback" not in error["message"]
    code: str = error["code"]
    return code


def labels(result: dict[str, Any]) -> set[str]:
    assert result["status"] == "ok", result
    return {o["label"] for o in result["outputs"]["detect"]["objects"]}


# --- allowed host ----------------------------------------------------------------------------


def test_good_url_gives_detections(
    allow_local: LiveServer, images_base: str, sent: list[str]
) -> None:
    body = analyze_urls(allow_local, [f"{images_base}/coco.jpg", f"{images_base}/redirect-ok"])
    for result in body["results"]:
        assert {"person", "tv"} <= labels(result)
        assert result["image"]["file_size"] == len(coco_image(GOOD))
    assert [r["id"] for r in body["results"]] == ["u0", "u1"]
    assert HITS.count("/coco.jpg") == 2
    assert set(sent) == {"127.0.0.1"}


@pytest.mark.parametrize("route", ["/redirect-metadata", "/redirect-private"])
def test_redirect_to_refused_address(
    allow_local: LiveServer, images_base: str, sent: list[str], route: str
) -> None:
    inline = {"data": base64.b64encode(coco_image(GOOD)).decode(), "id": "inline"}
    body = analyze_urls(
        allow_local, [f"{images_base}/coco.jpg", f"{images_base}{route}"], extra=[inline]
    )
    good, refused, inline_result = body["results"]
    assert item_code(refused) == "url_not_allowed"
    assert "person" in labels(good)
    assert "person" in labels(inline_result)
    assert body["summary"] == {"images": 3, "succeeded": 2, "failed": 1}
    assert route in HITS  # the first hop was fetched ...
    assert set(sent) == {"127.0.0.1"}  # ... the refused target never was


@pytest.mark.parametrize(
    ("route", "code"),
    [
        ("/slow", "fetch_failed"),
        ("/slow-headers", "fetch_failed"),
        ("/big", "image_too_large"),
        ("/big-chunked", "image_too_large"),
        ("/redirect-loop", "fetch_failed"),
        ("/500", "fetch_failed"),
        ("/missing", "fetch_failed"),
        ("/text", "image_decode_failed"),
    ],
)
def test_fetch_problems_are_item_errors(
    allow_local: LiveServer, images_base: str, route: str, code: str
) -> None:
    start = time.monotonic()
    body = analyze_urls(allow_local, [f"{images_base}{route}", f"{images_base}/coco.jpg"])
    took = time.monotonic() - start
    bad, good = body["results"]
    assert item_code(bad) == code
    assert "secret" not in bad["errors"][0]["message"]
    assert "person" in labels(good)
    assert took < 4  # the 1 s fetch deadline holds even against a server that dribbles
    if code == "image_too_large":
        assert str(MAX_IMAGE_BYTES) in bad["errors"][0]["message"]


def test_unreachable_port_is_fetch_failed(allow_local: LiveServer) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connections are refused
        body = analyze_urls(allow_local, [f"http://127.0.0.1:{port}/x.jpg"])
    assert item_code(body["results"][0]) == "fetch_failed"


# --- default policy: nothing private, nothing but http(s) -------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "{base}/coco.jpg",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://10.0.0.1/",
        "http://0.0.0.0/",
        "http://2130706433/",  # 127.0.0.1 as one decimal number
        "{localhost}/coco.jpg",
        "ftp://127.0.0.1/coco.jpg",
        "file:///etc/passwd",
        "gopher://127.0.0.1:70/",
        "http://user:secret@127.0.0.1/",
        "http:///no-host",
        "not a url at all",
    ],
)
def test_private_and_odd_urls_refused(
    strict: LiveServer, images_base: str, sent: list[str], url: str
) -> None:
    localhost = images_base.replace("127.0.0.1", "localhost")
    target = url.format(base=images_base, localhost=localhost)
    body = analyze_urls(strict, [target], extra=[])
    [result] = body["results"]
    assert item_code(result) == "url_not_allowed", result
    if "localhost" in target:  # the message never reveals what a name resolved to
        assert "127.0.0.1" not in result["errors"][0]["message"]
    assert sent == []  # refused before any request was even built
    assert HITS == []


def test_strict_refusal_does_not_fail_the_batch(
    strict: LiveServer, images_base: str, sent: list[str]
) -> None:
    inline = {"data": base64.b64encode(coco_image(GOOD)).decode()}
    body = analyze_urls(strict, [f"{images_base}/coco.jpg"], extra=[inline])
    refused, good = body["results"]
    assert item_code(refused) == "url_not_allowed"
    assert "person" in labels(good)
    assert sent == []
