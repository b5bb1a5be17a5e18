"""A request mixing a full-resolution skill (barcode) with a reduced one (detect), over real
HTTP: each answers exactly as it does alone, although detect reads a copy reduced from the full
image and the full-size pixels go when barcode is done."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import zxingcpp
from PIL import Image

from conftest import LiveServer, coco_image


def photo_with_a_code(scale: int) -> bytes:
    """A COCO photo enlarged `scale` times (more pixels than one tile) with a QR code on it."""
    photo = Image.open(io.BytesIO(coco_image())).convert("RGB")
    big = np.array(photo.resize((photo.width * scale, photo.height * scale)))
    symbol = np.asarray(
        zxingcpp.create_barcode("MIXED", zxingcpp.BarcodeFormat.QRCode).to_image(scale=8)
    )
    big[40 : 40 + symbol.shape[0], 40 : 40 + symbol.shape[1]] = symbol[:, :, None]
    buffer = io.BytesIO()
    Image.fromarray(big).save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def outputs(live: LiveServer, data: bytes, skills: list[str]) -> dict[str, Any]:
    with live.client() as client:
        response = client.post(
            "/v1/analyze",
            files=[("images", ("photo.png", data, "image/png"))],
            data={"tasks": json.dumps([{"skill": s} for s in skills])},
            timeout=300,
        )
    assert response.status_code == 200, response.text
    [result] = response.json()["results"]
    assert result["status"] == "ok", result
    found: dict[str, Any] = result["outputs"]
    return found


def test_detect_and_barcode_together_answer_as_each_does_alone(live_server: LiveServer) -> None:
    data = photo_with_a_code(6)  # 3840x2560: tiled for barcode, reduced 9x for detect
    mixed = outputs(live_server, data, ["detect", "barcode"])
    alone = {**outputs(live_server, data, ["detect"]), **outputs(live_server, data, ["barcode"])}
    assert [b["text"] for b in mixed["barcode"]["barcodes"]] == ["MIXED"]
    assert mixed["barcode"] == alone["barcode"]
    assert mixed["detect"]["objects"], "the photo's objects are found"
    assert mixed["detect"] == alone["detect"]
