"""The `barcode` skill through `POST /v1/analyze` over real HTTP: barcodes written by zxing-cpp,
placed (some rotated) in a larger noisy image, read back with text, format and position."""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest
import zxingcpp
from PIL import Image

from conftest import LiveServer

F = zxingcpp.BarcodeFormat


@dataclass(frozen=True)
class Placed:
    format: str
    text: str
    angle: int
    module: int  # module size in pixels
    box: tuple[int, int, int, int]  # dark modules' extent in the scene, [x1, y1, x2, y2)

    @property
    def linear(self) -> bool:
        return self.format in {"EAN13", "Code128"}


# (format, text, module scale, counter-clockwise rotation, where its picture goes)
LAYOUT: list[tuple[zxingcpp.BarcodeFormat, str, int, int, tuple[int, int]]] = [
    (F.QRCode, "https://example.org/bv?q=1", 6, 0, (60, 60)),
    (F.EAN13, "5901234123457", 3, 0, (700, 60)),
    (F.Code128, "BV-128-XYZ", 3, 90, (60, 420)),
    (F.DataMatrix, "datamatrix payload 42", 8, 30, (480, 520)),
    (F.QRCode, "rotated qr 45", 5, 45, (1000, 520)),
]


def symbol(fmt: zxingcpp.BarcodeFormat, text: str | bytes, scale: int) -> Image.Image:
    pixels = np.asarray(zxingcpp.create_barcode(text, fmt).to_image(scale=scale))
    return Image.fromarray(pixels)


def make_scene() -> tuple[bytes, list[Placed]]:
    """A 1400x1000 PNG: a grey gradient with noise and the LAYOUT barcodes."""
    rng = np.random.default_rng(7)
    ramp = np.linspace(200.0, 250.0, 1400)[None, :].repeat(1000, axis=0)
    scene = Image.fromarray(np.clip(ramp + rng.normal(0, 6, ramp.shape), 0, 255).astype(np.uint8))
    placed = []
    for fmt, text, scale, angle, (x, y) in LAYOUT:
        picture = symbol(fmt, text, scale)
        if angle:
            picture = picture.rotate(
                angle, expand=True, fillcolor=255, resample=Image.Resampling.BILINEAR
            )
        ys, xs = np.nonzero(np.asarray(picture) < 128)
        box = (x + int(xs.min()), y + int(ys.min()), x + int(xs.max()) + 1, y + int(ys.max()) + 1)
        scene.paste(picture, (x, y))
        placed.append(Placed(fmt.name, text, angle, scale, box))
    return png(scene.convert("RGB")), placed


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


SCENE, PLACED = make_scene()


def analyze(
    client: httpx.Client, images: list[tuple[str, bytes]], params: dict[str, Any] | None = None
) -> httpx.Response:
    files = [("images", (name, data, "application/octet-stream")) for name, data in images]
    tasks = json.dumps([{"skill": "barcode", "params": params or {}}])
    return client.post("/v1/analyze", files=files, data={"tasks": tasks})


def barcodes_of(response: httpx.Response, index: int = 0) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    result = response.json()["results"][index]
    assert result["status"] == "ok", result
    found: list[dict[str, Any]] = result["outputs"]["barcode"]["barcodes"]
    return found


def iou(a: list[float], b: tuple[int, int, int, int]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


def signed_area(polygon: list[list[float]]) -> float:
    return sum(
        x1 * y2 - x2 * y1
        for (x1, y1), (x2, y2) in zip(polygon, polygon[1:] + polygon[:1], strict=True)
    )


def check_shape(barcode: dict[str, Any], width: int, height: int) -> None:
    """The documented output shape of one barcode."""
    required = {
        "format",
        "symbology",
        "text",
        "content_type",
        "symbology_identifier",
        "ec_level",
        "orientation",
        "polygon",
        "box",
    }
    assert required <= set(barcode)
    assert set(barcode) - required <= {"bytes_base64"}
    assert isinstance(barcode["text"], str)
    assert len(barcode["polygon"]) == 4
    for x, y in barcode["polygon"]:
        assert 0 <= x <= width and 0 <= y <= height
    xs = [p[0] for p in barcode["polygon"]]
    ys = [p[1] for p in barcode["polygon"]]
    assert barcode["box"] == [min(xs), min(ys), max(xs), max(ys)]
    assert signed_area(barcode["polygon"]) >= 0, "polygon must run clockwise"
    assert isinstance(barcode["orientation"], int)


def test_reads_every_barcode_with_its_text_format_and_place(live_server: LiveServer) -> None:
    with live_server.client() as client:
        response = analyze(client, [("scene.png", SCENE)])
    body = response.json()
    assert body["tasks"] == [
        {
            "skill": "barcode",
            "params": {"formats": None, "max_symbols": 32, "try_rotate": True, "try_harder": True},
        }
    ]
    found = barcodes_of(response)
    assert len(found) == len(PLACED)
    for barcode in found:
        check_shape(barcode, 1400, 1000)
    for placed in PLACED:
        [match] = [b for b in found if b["text"] == placed.text]
        assert match["format"] == placed.format
        assert match["content_type"] == "text"
        x1, y1, x2, y2 = placed.box
        tolerance = placed.module  # corners are found to within about a module
        for x, y in match["polygon"]:  # every corner lies on the symbol
            assert x1 - tolerance <= x <= x2 + tolerance, (placed, match)
            assert y1 - tolerance <= y <= y2 + tolerance, (placed, match)
        if placed.linear:
            # zxing-cpp bounds a 1D symbol by the scan lines it used: the full length of the bars'
            # run, not necessarily their full height.
            along = (2, 0) if placed.angle == 0 else (3, 1)
            length = match["box"][along[0]] - match["box"][along[1]]
            assert length >= 0.9 * (placed.box[along[0]] - placed.box[along[1]]), (placed, match)
        else:
            assert iou(match["box"], placed.box) >= 0.8, (placed, match)
        # zxing-cpp's orientation is clockwise; PIL rotated the symbols counter-clockwise
        assert abs(match["orientation"] + placed.angle) <= 3, (placed, match)


def test_polygon_starts_at_the_symbols_top_left(live_server: LiveServer) -> None:
    with live_server.client() as client:
        found = barcodes_of(analyze(client, [("scene.png", SCENE)]))
    upright_qr = next(b for b in found if b["text"] == "https://example.org/bv?q=1")
    x1, y1, x2, y2 = next(p.box for p in PLACED if p.text == upright_qr["text"])
    expected = [[x1, y1], [x2, y1], [x2, y2], [x1, y2]]
    for (x, y), (ex, ey) in zip(upright_qr["polygon"], expected, strict=True):
        assert abs(x - ex) <= 2 and abs(y - ey) <= 2, upright_qr["polygon"]
    # Code 128 turned 90 degrees counter-clockwise: its top-left corner is now bottom-left.
    code128 = next(b for b in found if b["format"] == "Code128")
    bx1, _, _, by2 = next(p.box for p in PLACED if p.format == "Code128")
    start_x, start_y = code128["polygon"][0]
    assert abs(start_x - bx1) <= 4 and abs(start_y - by2) <= 4, code128["polygon"]


@pytest.mark.parametrize(
    ("formats", "expected"),
    [
        (["QRCode"], {"QRCode"}),
        (["qr code"], {"QRCode"}),
        (["ean-13", "Code 128"], {"EAN13", "Code128"}),
        (["DATA_MATRIX"], {"DataMatrix"}),
        (["AllLinear"], {"EAN13", "Code128"}),
        (["AllMatrix"], {"QRCode", "DataMatrix"}),
        (["Aztec"], set()),
    ],
)
def test_formats_filter_excludes_the_others(
    live_server: LiveServer, formats: list[str], expected: set[str]
) -> None:
    with live_server.client() as client:
        found = barcodes_of(analyze(client, [("scene.png", SCENE)], {"formats": formats}))
    assert {b["format"] for b in found} == expected
    assert len(found) == sum(1 for p in PLACED if p.format in expected)


def test_unknown_format_is_a_422_listing_the_valid_names(live_server: LiveServer) -> None:
    with live_server.client() as client:
        response = analyze(client, [("scene.png", SCENE)], {"formats": ["QRCode", "Barcode99"]})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_parameter"
    assert "Barcode99" in error["message"]
    for name in ("QRCode", "EAN13", "UPCA", "DataMatrix", "Code128", "PDF417", "Aztec"):
        assert name in error["message"]


@pytest.mark.parametrize(
    "params",
    [
        {"formats": "QRCode"},  # a string, not a list
        {"formats": []},
        {"max_symbols": 0},
        {"max_symbols": "3"},
        {"try_harder": "yes"},
        {"colour": "red"},
    ],
)
def test_bad_parameters_are_422(live_server: LiveServer, params: dict[str, Any]) -> None:
    with live_server.client() as client:
        response = analyze(client, [("scene.png", SCENE)], params)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_parameter"


def test_max_symbols_caps_the_reports(live_server: LiveServer) -> None:
    with live_server.client() as client:
        found = barcodes_of(analyze(client, [("scene.png", SCENE)], {"max_symbols": 2}))
    assert len(found) == 2


def test_a_broken_image_fails_alone(live_server: LiveServer) -> None:
    truncated = SCENE[: len(SCENE) // 3]
    images = [("scene.png", SCENE), ("broken.png", truncated), ("noise.bin", b"not an image")]
    with live_server.client() as client:
        response = analyze(client, [*images, ("again.png", SCENE)])
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["summary"] == {"images": 4, "succeeded": 2, "failed": 2}
    ok, broken, noise, again = body["results"]
    assert len(ok["outputs"]["barcode"]["barcodes"]) == len(PLACED)
    assert again["outputs"]["barcode"] == ok["outputs"]["barcode"]
    for failed in (broken, noise):
        assert failed["status"] == "error"
        assert failed["outputs"] == {}
        assert [e["code"] for e in failed["errors"]] == ["image_decode_failed"]


def test_json_body_with_base64_and_an_image_without_barcodes(live_server: LiveServer) -> None:
    blank = png(Image.new("RGB", (320, 240), (240, 240, 240)))
    body = {
        "images": [
            {"id": "scene", "data": base64.b64encode(SCENE).decode()},
            {"id": "blank", "data": base64.b64encode(blank).decode()},
        ],
        "tasks": [{"skill": "barcode"}, {"skill": "metadata"}],
    }
    with live_server.client() as client:
        response = client.post("/v1/analyze", json=body)
    assert response.status_code == 200, response.text
    scene, empty = response.json()["results"]
    assert scene["id"] == "scene" and scene["status"] == "ok"
    assert len(scene["outputs"]["barcode"]["barcodes"]) == len(PLACED)
    assert scene["outputs"]["metadata"]["width"] == 1400
    assert empty["outputs"]["barcode"] == {"barcodes": []}


def test_binary_content_carries_its_bytes(live_server: LiveServer) -> None:
    payload = b"\x00\xff\x10binary\x80"
    picture = Image.new("L", (400, 400), 255)
    picture.paste(symbol(F.QRCode, payload, 6), (100, 100))
    with live_server.client() as client:
        [found] = barcodes_of(analyze(client, [("bin.png", png(picture))]))
    assert found["format"] == "QRCode"
    assert found["content_type"] == "binary"
    assert base64.b64decode(found["bytes_base64"]) == payload


def test_skills_lists_barcode_with_its_parameters(live_server: LiveServer) -> None:
    with live_server.client() as client:
        response = client.get("/v1/skills")
    assert response.status_code == 200, response.text
    skills = response.json()["skills"]
    barcode = next(s for s in skills if s["name"] == "barcode")
    assert set(barcode["params"]["properties"]) == {
        "formats",
        "max_symbols",
        "try_rotate",
        "try_harder",
    }
