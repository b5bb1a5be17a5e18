"""OCR on an image larger than one tile: read tile by tile, every line read once and whole, the
same text a whole-image reading gives, words across seams included."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from batchvision.core.types import DecodedImage, Task
from batchvision.pipeline import Pipeline
from conftest import make_settings

FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
LINES = [
    "the seams of a tiled page",
    "cut through these words here",
    "yet every word is read once",
    "and every line comes out whole",
]


def page(side: int) -> np.ndarray:
    image = Image.new("RGB", (side, side), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.truetype(str(FONT), 44)
    for i, text in enumerate(LINES):  # lines across the vertical seams, one on a horizontal one
        draw.text((180 + 90 * i, 400 + 340 * i), text, fill="black", font=font)
    return np.asarray(image)


def read(tmp_path: Path, pixels: np.ndarray, tile_side: int) -> dict[str, Any]:
    settings = make_settings(tmp_path, tile_side=tile_side, tile_overlap=256)
    pipeline = Pipeline(settings)
    [task] = pipeline.prepare_tasks([Task("ocr", {"languages": ["en"], "engine": "tesseract"})])
    height, width = pixels.shape[:2]
    image = DecodedImage(pixels, width, height, "PNG", 0)
    [output] = asyncio.run(task.skill.run([image], task.params))
    assert isinstance(output, dict)
    return output


def line_texts(output: dict[str, Any]) -> list[str]:
    return [line["text"] for block in output["pages"][0]["blocks"] for line in block["lines"]]


def test_a_tiled_page_reads_every_line_once_and_whole(tmp_path: Path) -> None:
    pixels = page(1800)  # 3.2 MP: nine 1024 px tiles
    tiled = read(tmp_path, pixels, tile_side=1024)
    whole = read(tmp_path, pixels, tile_side=2048)
    assert sorted(line_texts(whole)) == sorted(LINES)
    assert sorted(line_texts(tiled)) == sorted(LINES)
    words = [w for b in tiled["pages"][0]["blocks"] for ln in b["lines"] for w in ln["words"]]
    assert len(words) == sum(len(text.split()) for text in LINES)
    for word in words:  # positions in the page's pixels, not a tile's
        [x1, y1], _, [x2, y2], _ = word["polygon"]
        assert 0 <= x1 < x2 <= 1800 and 400 <= y1 < y2 <= 1500
