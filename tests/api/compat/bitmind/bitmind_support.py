"""What the BitMind tests share: images from the eval set and images the tests build, request
builders and the check of BitMind's error body."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from PIL import Image, PngImagePlugin

from batchvision.accounts.keys import KeyStore
from batchvision.core.db import make_engine
from conftest import EVALDATA, LiveServer

IMAGES = EVALDATA / "ai_generated" / "images"
AI_JPEG = (IMAGES / "ai_diffusion1_1.jpg").read_bytes()
REAL_JPEG = next(p for p in sorted(IMAGES.iterdir()) if p.name.startswith("real")).read_bytes()
A1111 = "a cat in a hat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 42, Size: 512x512"


def converted(data: bytes, fmt: str, pnginfo: PngImagePlugin.PngInfo | None = None) -> bytes:
    buffer = io.BytesIO()
    image = Image.open(io.BytesIO(data))
    if pnginfo is None:
        image.save(buffer, fmt)
    else:
        image.save(buffer, fmt, pnginfo=pnginfo)
    return buffer.getvalue()


def a1111_png() -> bytes:
    """A PNG carrying AUTOMATIC1111's `parameters` text chunk."""
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", A1111)
    return converted(REAL_JPEG, "PNG", info)


def tiny_png(shade: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (48, 48), (shade, 255 - shade, 128)).save(buffer, "PNG")
    return buffer.getvalue()


def batch(
    client: httpx.Client, images: list[tuple[str, bytes]], headers: dict[str, str] | None = None
) -> httpx.Response:
    files = [("images", (name, data, "application/octet-stream")) for name, data in images]
    return client.post("/batch_image", files=files, headers=headers or {})


def single(
    client: httpx.Client, data: bytes, content_type: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    return client.post(
        "/image", content=data, headers={"Content-Type": content_type, **(headers or {})}
    )


def error_of(response: httpx.Response, status: int, code: str) -> str:
    """The message of a BitMind error body `{error, message}` with this status and code."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"error", "message"}, body
    assert body["error"] == code, body
    message: str = body["message"]
    assert message
    return message


@dataclass
class Keyed:
    """A running server with auth required and a KeyStore on the same SQLite file."""

    live: LiveServer
    store: KeyStore

    def client(self) -> httpx.Client:
        return self.live.client()


def keyed_server(serve: Callable[..., LiveServer], **overrides: Any) -> Keyed:
    live = serve(auth="required", **overrides)  # the server migrates the database at start-up
    return Keyed(live, KeyStore(make_engine(live.settings)))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
