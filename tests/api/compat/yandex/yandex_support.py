"""What the Yandex Vision tests share: rendered text to OCR, request builders, checks of the
google.rpc error body."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import httpx
from PIL import Image, ImageDraw, ImageFont

ROUTE = "/vision/v1/batchAnalyze"
FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


def render(text: str, size: tuple[int, int] = (640, 120), fmt: str = "PNG") -> bytes:
    image = Image.new("RGB", size, "white")
    ImageDraw.Draw(image).text((20, 30), text, fill="black", font=ImageFont.truetype(str(FONT), 40))
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def spec(content: str, *features: dict[str, Any]) -> dict[str, Any]:
    return {"content": content, "features": list(features) or [ocr_feature("en")]}


def ocr_feature(*codes: str) -> dict[str, Any]:
    return {"type": "TEXT_DETECTION", "textDetectionConfig": {"languageCodes": list(codes)}}


def post(client: httpx.Client, body: Any, **headers: str) -> httpx.Response:
    return client.post(ROUTE, json=body, headers=headers)


def words_of(feature_result: dict[str, Any]) -> list[str]:
    pages = feature_result["textDetection"]["pages"]
    return [
        word["text"]
        for page in pages
        for block in page["blocks"]
        for line in block["lines"]
        for word in line["words"]
    ]


def assert_rpc_error(body: dict[str, Any], code: int) -> None:
    assert set(body) == {"code", "message", "details"}
    assert body["code"] == code
    assert isinstance(body["message"], str) and body["message"]
    assert body["details"] == []
