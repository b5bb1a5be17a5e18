"""The annotated image of a prediction: the file with its detections drawn on it (Pillow).

Readable on any photo: each class has its own colour from a palette of strong, distinct hues;
a label is written on a filled background of the box's colour, in black or white, whichever
contrasts more; line width and text size follow the size of the picture drawn (a 2 px line is
lost on a 4000 px photo and a 12 px line swamps a thumbnail). The picture is the upright file
scaled so that its longer side is at most `MAX_SIDE` (boxes scaled with it): an annotated
image is for looking at, and a 12 MP PNG would cost ~20 MB of storage per file.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from batchvision.intake.decode import decode_image

MAX_SIDE = 1280
# Tableau's 10 colours plus 6 more strong hues: told apart at a glance, none near-white.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
    (0, 0, 255),
    (255, 0, 255),
    (0, 128, 128),
    (128, 0, 0),
    (255, 215, 0),
    (0, 255, 127),
)
BLACK = (0, 0, 0)
WHITE = (255, 255, 255)


def colour_for(class_id: int) -> tuple[int, int, int]:
    return PALETTE[class_id % len(PALETTE)]


def text_colour(background: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white, whichever stands out more on `background` (relative luminance)."""
    r, g, b = background
    luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b
    return BLACK if luminance > 140 else WHITE


def line_width(width: int, height: int) -> int:
    return max(2, round(max(width, height) / 400))


def font_size(width: int, height: int) -> int:
    return max(12, round(max(width, height) / 50))


def picture(data: bytes, max_pixels: int) -> Image.Image:
    """The upright file as RGB, its longer side at most MAX_SIDE."""
    decoded = decode_image(data, max_pixels=max_pixels, target_side=MAX_SIDE)
    image = Image.fromarray(decoded.pixels)
    image.thumbnail((MAX_SIDE, MAX_SIDE))
    return image


def draw_objects(
    image: Image.Image, objects: Sequence[Mapping[str, Any]], scale: tuple[float, float]
) -> None:
    """Draw each object's `box` (pixels of the original, times `scale`) and its label."""
    draw = ImageDraw.Draw(image)
    width = line_width(*image.size)
    font = ImageFont.load_default(size=font_size(*image.size))
    for item in objects:
        colour = colour_for(int(item["class_id"]))
        x1, y1, x2, y2 = item["box"]
        box = (x1 * scale[0], y1 * scale[1], x2 * scale[0], y2 * scale[1])
        draw.rectangle(box, outline=colour, width=width)
        _label(draw, font, f"{item['label']} {item['confidence']:.2f}", box, colour)


def _label(
    draw: ImageDraw.ImageDraw,
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
    text: str,
    box: tuple[float, float, float, float],
    colour: tuple[int, int, int],
) -> None:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    pad = max(2, (bottom - top) // 5)
    height = bottom - top + 2 * pad
    # Above the box, or just inside it when the box touches the top edge.
    y = box[1] - height if box[1] >= height else box[1]
    draw.rectangle((box[0], y, box[0] + right - left + 2 * pad, y + height), fill=colour)
    draw.text((box[0] + pad - left, y + pad - top), text, fill=text_colour(colour), font=font)


def annotated_png(
    data: bytes, objects: Sequence[Mapping[str, Any]], original: tuple[int, int], max_pixels: int
) -> bytes:
    """The file `data` (whose upright size is `original`) with `objects` drawn, as PNG."""
    image = picture(data, max_pixels)
    scale = (image.width / original[0], image.height / original[1])
    draw_objects(image, objects, scale)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()
