"""Helpers shared by the accounts tests: a keyed server, its key store, analyze calls, raw HTTP."""

from __future__ import annotations

import base64
import functools
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from batchvision.accounts.keys import KeyStore
from batchvision.core.db import make_engine
from conftest import LiveServer, coco_image

# An address the strict URL policy refuses without any network traffic.
REFUSED_URL = "http://127.0.0.1:9/x.jpg"


@dataclass
class Keyed:
    """A running server with auth required and a KeyStore on the same SQLite file."""

    live: LiveServer
    store: KeyStore

    def client(self) -> httpx.Client:
        return self.live.client()


def keyed_server(serve: Callable[..., LiveServer], **overrides: Any) -> Keyed:
    overrides.setdefault("auth", "required")
    live = serve(**overrides)  # the server migrates the database at start-up
    return Keyed(live, KeyStore(make_engine(live.settings)))


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@functools.cache
def image_b64() -> str:
    return base64.b64encode(coco_image()).decode("ascii")


def good_image(client_id: str = "ok") -> dict[str, Any]:
    return {"data": image_b64(), "id": client_id}


def analyze_body(images: int = 1, tasks: Any = None) -> dict[str, Any]:
    """A JSON analyze body of `images` readable images; metadata needs no model file."""
    return {
        "images": [good_image(f"img{i}") for i in range(images)],
        "tasks": ["metadata"] if tasks is None else tasks,
    }


def analyze(
    client: httpx.Client, secret: str | None, images: int = 1, **extra: Any
) -> httpx.Response:
    headers = bearer(secret) if secret is not None else {}
    return client.post("/v1/analyze", json=analyze_body(images, **extra), headers=headers)


def error_code(response: httpx.Response) -> str:
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    code: str = body["error"]["code"]
    return code


def raw_request(url: str, head: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send `head` (request line and headers, CRLF separated, no final blank line) as raw bytes,
    for headers an HTTP client refuses to send; answer status, headers and body."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(head + b"\r\nHost: test\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    header_block, _, body = data.partition(b"\r\n\r\n")
    lines = header_block.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body
