"""Results drawn on their image (`analyze --draw`, `run --draw`): boxes with label and score
(detect, animals), OCR line and word polygons with their text, barcode outlines with the decoded
text, points, and a banner for the one-line answers (caption, query, synthetic).

Coordinates are the skills' own: pixels of the upright original. So the image is decoded again
by `intake.decode` at full size, with the orientation rules the skills saw, never by a second
EXIF reader that could turn it differently.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from batchvision.core.fsutil import write_atomic
from batchvision.intake.decode import decode_image

RGB = tuple[int, int, int]
Font = ImageFont.FreeTypeFont | ImageFont.ImageFont

# Distinct on photos and on each other (Tableau 10); a label keeps its colour in every image.
PALETTE: tuple[RGB, ...] = (
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
)
# Camera-trap categories keep the colours MegaDetector's own renderings use for them.
CATEGORY_COLOURS: dict[str, RGB] = {
    "animal": (44, 160, 44),
    "human": (255, 127, 14),
    "vehicle": (31, 119, 180),
}
# DejaVu (Debian fonts-dejavu-core) covers Latin, Cyrillic and Greek, which OCR text needs;
# Pillow's built-in font covers Latin only and is the fallback.
FONT_FILES = ("DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
# Formats written as they came; anything else (HEIC, TIFF, WebP, ...) is written as PNG, which
# every viewer opens, under the input's name plus ".png".
KEPT_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG"}
LABEL_CHARS = 60  # longer texts (a URL in a QR code, a caption) are cut with "…"


def colour_for(label: str) -> RGB:
    return PALETTE[zlib.crc32(label.encode()) % len(PALETTE)]


@cache
def font(size: int) -> Font:
    for name in FONT_FILES:
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default(size)


@dataclass
class Canvas:
    """An RGB image with pen sizes scaled to it, so a 4000 px photo gets lines as visible
    as a 640 px one's."""

    image: Image.Image

    def __post_init__(self) -> None:
        self.draw = ImageDraw.Draw(self.image)
        short_side = min(self.image.size)
        self.width = max(2, round(short_side / 250))
        self.font = font(max(12, round(short_side / 40)))

    def box(self, xyxy: Sequence[float], colour: RGB, text: str) -> None:
        x1, y1, x2, y2 = (float(v) for v in xyxy)
        self.draw.rectangle((x1, y1, x2, y2), outline=colour, width=self.width)
        self.label((x1, y1), colour, text)

    def polygon(self, points: Sequence[Sequence[float]], colour: RGB, width: int) -> None:
        corners = [(float(x), float(y)) for x, y in points]
        if len(corners) >= 2:
            self.draw.line([*corners, corners[0]], fill=colour, width=width, joint="curve")

    def point(self, x: float, y: float, colour: RGB) -> None:
        r = 2 * self.width
        self.draw.ellipse((x - r, y - r, x + r, y + r), fill=colour, outline=(255, 255, 255))

    def label(self, anchor: tuple[float, float], colour: RGB, text: str) -> None:
        """`text` on a filled tag just above `anchor` (inside the image when there is no room
        above), in black or white, whichever reads on the colour."""
        text = shorten(text)
        left, top, right, bottom = self.draw.textbbox((0, 0), text, font=self.font)
        pad = max(1, self.width // 2)
        height = bottom - top + 2 * pad
        x = min(max(anchor[0], 0.0), max(self.image.width - (right - left) - 2 * pad, 0))
        y = anchor[1] - height if anchor[1] - height >= 0 else anchor[1]
        tag = (x, y, x + right - left + 2 * pad, y + height)
        self.draw.rectangle(tag, fill=colour)
        self.draw.text((x + pad - left, y + pad - top), text, fill=ink_on(colour), font=self.font)

    def banner(self, text: str) -> None:
        """One line across the bottom of the image, for answers that belong to no region."""
        height = self.draw.textbbox((0, 0), "Ag", font=self.font)[3] + 2 * self.width
        top = self.image.height - height
        self.draw.rectangle((0, top, self.image.width, self.image.height), fill=(0, 0, 0))
        fitted = fit(text, self.image.width - 2 * self.width, self.draw, self.font)
        self.draw.text((self.width, top + self.width), fitted, fill=(255, 255, 255), font=self.font)


def ink_on(colour: RGB) -> RGB:
    red, green, blue = colour
    return (0, 0, 0) if 0.299 * red + 0.587 * green + 0.114 * blue > 150 else (255, 255, 255)


def shorten(text: str, limit: int = LABEL_CHARS) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def fit(text: str, width: float, draw: ImageDraw.ImageDraw, face: Font) -> str:
    """`text` cut (with "…") to what `width` pixels hold."""
    flat = " ".join(text.split())
    if draw.textlength(flat, font=face) <= width:
        return flat
    while flat and draw.textlength(flat + "…", font=face) > width:
        flat = flat[:-1]
    return flat + "…"


# --- one drawer per skill ---------------------------------------------------------------------


def _detect(canvas: Canvas, payload: Mapping[str, Any]) -> None:
    for item in payload.get("objects", []):
        label = str(item["label"])
        canvas.box(item["box"], colour_for(label), f"{label} {float(item['score']):.2f}")


def _animals(canvas: Canvas, payload: Mapping[str, Any]) -> None:
    for item in payload.get("annotations", []):
        colour = CATEGORY_COLOURS.get(str(item["category"]), colour_for(str(item["category"])))
        canvas.box(item["box"], colour, f"{item['label']} {float(item['score']):.2f}")


def _ocr(canvas: Canvas, payload: Mapping[str, Any]) -> None:
    line_colour, word_colour = (214, 39, 40), (255, 187, 120)
    for page in payload.get("pages", []):
        for block in page.get("blocks", []):
            for line in block.get("lines", []):
                for word in line.get("words", []):
                    canvas.polygon(word["polygon"], word_colour, max(1, canvas.width // 2))
                canvas.polygon(line["polygon"], line_colour, canvas.width)
                x, y = min(p[0] for p in line["polygon"]), min(p[1] for p in line["polygon"])
                canvas.label((x, y), line_colour, str(line.get("text", "")))


def _barcode(canvas: Canvas, payload: Mapping[str, Any]) -> None:
    colour = (148, 103, 189)
    for code in payload.get("barcodes", []):
        canvas.polygon(code["polygon"], colour, canvas.width)
        x, y = min(p[0] for p in code["polygon"]), min(p[1] for p in code["polygon"])
        canvas.label((x, y), colour, f"{code['format']}: {code['text']}")


def _point(canvas: Canvas, payload: Mapping[str, Any]) -> None:
    for point in payload.get("points", []):
        canvas.point(float(point["x"]), float(point["y"]), (214, 39, 40))


def _banner(key: str, prefix: str) -> Callable[[Canvas, Mapping[str, Any]], None]:
    def draw(canvas: Canvas, payload: Mapping[str, Any]) -> None:
        canvas.banner(f"{prefix}: {payload.get(key, '')}")

    return draw


def _synthetic(canvas: Canvas, payload: Mapping[str, Any]) -> None:
    verdict = payload.get("verdict", "")
    canvas.banner(f"synthetic: {verdict} (AI probability {payload.get('ai_probability')})")


DRAWERS: dict[str, Callable[[Canvas, Mapping[str, Any]], None]] = {
    "detect": _detect,
    "animals": _animals,
    "ocr": _ocr,
    "barcode": _barcode,
    "point": _point,
    "caption": _banner("caption", "caption"),
    "query": _banner("answer", "answer"),
    "synthetic": _synthetic,
}


def draw_outputs(image: Image.Image, outputs: Mapping[str, Any]) -> Image.Image:
    """A copy of `image` with every skill output drawn on it (metadata has nothing to draw)."""
    canvas = Canvas(image.convert("RGB"))
    for skill, payload in outputs.items():
        drawer = DRAWERS.get(skill)
        if drawer is not None and isinstance(payload, Mapping):
            drawer(canvas, payload)
    return canvas.image


# --- files ------------------------------------------------------------------------------------


def drawing_path(folder: Path, name: str) -> Path:
    """Where the picture of input `name` (a relative path for `run`) goes under `folder`: the
    same name, with ".png" added unless it already is a JPEG or a PNG."""
    target = folder / name
    if target.suffix.lower() in KEPT_FORMATS:
        return target
    return target.with_name(target.name + ".png")


def write_drawing(source: Path, outputs: Mapping[str, Any], target: Path, max_pixels: int) -> Path:
    """Decode `source` upright at full size, draw `outputs` on it and write it to `target`."""
    decoded = decode_image(source.read_bytes(), max_pixels=max_pixels)
    picture = draw_outputs(Image.fromarray(decoded.pixels), outputs)
    fmt = KEPT_FORMATS.get(target.suffix.lower(), "PNG")
    buffer = io.BytesIO()
    picture.save(buffer, format=fmt, **({"quality": 92} if fmt == "JPEG" else {}))
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, buffer.getvalue(), durable=False)
    return target
