"""Barcodes on images larger than one tile: read in overlapping full-resolution tiles and halved
levels, every symbol found once, wherever it lies against the seams, over real HTTP too."""

from __future__ import annotations

import io
import itertools
import json
from typing import Any

import numpy as np
import pytest
import zxingcpp

from batchvision.core.types import DecodedImage
from batchvision.skills.barcode import BarcodeParams, read_barcodes, read_options
from batchvision.skills.tiles import TileGrid
from conftest import LiveServer

F = zxingcpp.BarcodeFormat
WHITE = 255


def canvas(side: int) -> np.ndarray:
    return np.full((side, side, 3), WHITE, np.uint8)


def draw(
    pixels: np.ndarray, text: str, fmt: zxingcpp.BarcodeFormat, scale: int, x: int, y: int
) -> tuple[int, int]:
    """The symbol's image (with its quiet zone) at (x, y); returns its size."""
    symbol = np.asarray(zxingcpp.create_barcode(text, fmt).to_image(scale=scale))
    pixels[y : y + symbol.shape[0], x : x + symbol.shape[1]] = symbol[:, :, None]
    return symbol.shape[1], symbol.shape[0]


def read(pixels: np.ndarray, grid: TileGrid | None) -> list[dict[str, Any]]:
    height, width = pixels.shape[:2]
    image = DecodedImage(pixels, width, height, "PNG", 0)
    barcodes: list[dict[str, Any]] = read_barcodes(image, read_options(BarcodeParams()), grid)[
        "barcodes"
    ]
    return barcodes


def centre(box: list[float]) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def test_the_grid_covers_the_image_and_its_cores_partition_it() -> None:
    grid = TileGrid(512, 128)
    tiles = grid.tiles(1500, 1100)
    for axis_length, starts in ((1500, {t.x for t in tiles}), (1100, {t.y for t in tiles})):
        ordered = sorted(starts)
        assert ordered[0] == 0 and ordered[-1] + 512 == axis_length
        assert all(b - a <= 512 - 128 for a, b in itertools.pairwise(ordered))
    for x in range(0, 1500, 37):
        for y in range(0, 1100, 41):
            owners = [t for t in tiles if t.owns(x + 0.5, y + 0.5)]
            assert len(owners) == 1
            tile = owners[0]
            assert tile.x <= x < tile.x + tile.width and tile.y <= y < tile.y + tile.height
    assert len(grid.tiles(500, 500)) == 1  # no more pixels than one tile: read whole


@pytest.mark.parametrize("offset", [-70, -40, -10, 0, 25, 60])
def test_a_symbol_on_a_seam_is_found_once_at_its_place(offset: int) -> None:
    grid = TileGrid(512, 128)
    pixels = canvas(1500)
    seam = grid.tiles(1500, 1500)[1].x  # where the second column of tiles starts
    width, height = draw(pixels, "ON-THE-SEAM", F.QRCode, 3, seam + offset, seam + offset)
    [found] = read(pixels, grid)
    assert found["text"] == "ON-THE-SEAM"
    cx, cy = centre(found["box"])
    assert abs(cx - (seam + offset + width / 2)) < 4 and abs(cy - (seam + offset + height / 2)) < 4


def test_symbols_larger_than_the_overlap_are_read_on_a_halved_level() -> None:
    grid = TileGrid(512, 128)
    pixels = canvas(1500)
    draw(pixels, "LARGER-THAN-THE-OVERLAP", F.QRCode, 12, 300, 300)  # ~370 px, over 3 seams
    draw(pixels, "4006381333931", F.EAN13, 2, 1000, 1200)
    found = {b["text"]: b for b in read(pixels, grid)}
    assert set(found) == {"LARGER-THAN-THE-OVERLAP", "4006381333931"}
    assert found["LARGER-THAN-THE-OVERLAP"]["box"][0] == pytest.approx(300 + 12 * 4, abs=4)
    assert found["4006381333931"]["format"] == "EAN13"


def test_tiles_and_a_whole_image_read_agree() -> None:
    pixels = canvas(1400)
    draw(pixels, "A", F.QRCode, 4, 100, 100)
    draw(pixels, "B-DATAMATRIX", F.DataMatrix, 5, 700, 380)
    draw(pixels, "C128-TEXT", F.Code128, 2, 250, 1100)
    whole = read(pixels, None)
    tiled = read(pixels, TileGrid(512, 128))
    assert (
        sorted(b["text"] for b in whole)
        == sorted(b["text"] for b in tiled)
        == [
            "A",
            "B-DATAMATRIX",
            "C128-TEXT",
        ]
    )
    by_text = {b["text"]: b["box"] for b in whole}
    for barcode in tiled:
        assert barcode["box"] == pytest.approx(by_text[barcode["text"]], abs=3)


def png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def test_a_7900_px_image_over_http_finds_every_symbol_once(live_server: LiveServer) -> None:
    """The default grid (2048 px tiles, 512 px overlap): one symbol across the first seam, one
    of 1160 px (larger than the overlap), one EAN-13 in a far tile."""
    pixels = canvas(7900)
    draw(pixels, "SEAM", F.QRCode, 6, 1792 - 60, 1792 - 60)
    draw(pixels, "BIG", F.QRCode, 40, 3000, 3000)
    draw(pixels, "4006381333931", F.EAN13, 2, 6200, 500)
    data = png(pixels)
    del pixels
    with live_server.client() as client:
        response = client.post(
            "/v1/analyze",
            files=[("images", ("big.png", data, "image/png"))],
            data={"tasks": json.dumps([{"skill": "barcode"}])},
            timeout=300,
        )
    assert response.status_code == 200, response.text
    [result] = response.json()["results"]
    assert result["status"] == "ok", result
    assert result["image"]["width"] == 7900
    found = {b["text"]: b["box"] for b in result["outputs"]["barcode"]["barcodes"]}
    assert len(result["outputs"]["barcode"]["barcodes"]) == 3
    assert found["SEAM"] == pytest.approx([1756, 1756, 1883, 1883], abs=3)
    assert found["BIG"] == pytest.approx([3160, 3160, 4000, 4000], abs=3)
    assert centre(found["4006381333931"])[0] == pytest.approx(6316, abs=5)
