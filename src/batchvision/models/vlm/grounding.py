"""Coordinates from a vision-language model: how to ask for them and how to read them, strictly.

Three conventions (`BATCHVISION_VLM_GROUNDING`):
- `qwen2.5-vl`: JSON `[{"bbox_2d": [x1, y1, x2, y2]}]` / `[{"point_2d": [x, y]}]` in pixels of
  the image as the model saw it. Qwen2.5-VL resizes every image (`smart_resize`: sides multiples
  of 28, pixel count within bounds); the image is sent already at that size, so the model's
  pixels are the sent image's pixels and map back to the original by one scale per axis.
- `norm1000`: the same JSON, coordinates normalised to 0..1000 (Qwen3-VL and others).
- `moondream`: the native REST answer, `{x_min, y_min, x_max, y_max}` / `{x, y}` in 0..1.

Every reader returns fractions (0..1) of the sent image. An answer that is not the JSON asked
for is a `processing_error` carrying the first 200 characters the model said: a fence
(```json … ```) is tolerated, prose is never searched for numbers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from batchvision.core.errors import BatchVisionError, ErrorCode
from batchvision.core.types import PixelBox
from batchvision.models.vlm.calls import Point, Size
from batchvision.models.vlm.config import Grounding

QWEN_FACTOR = 28  # patch 14 x merge 2
QWEN_MIN_PIXELS = 56 * 56  # the Qwen2.5-VL image processor's defaults (also Ollama's)
QWEN_MAX_PIXELS = 28 * 28 * 1280
QWEN_MAX_RATIO = 200
SHOWN_CHARS = 200
_SLACK = 0.02  # a coordinate a hair outside the image (rounding) is clamped, not refused


def smart_resize(
    height: int,
    width: int,
    factor: int = QWEN_FACTOR,
    min_pixels: int = QWEN_MIN_PIXELS,
    max_pixels: int = QWEN_MAX_PIXELS,
) -> tuple[int, int]:
    """(height, width) as Qwen2.5-VL resizes an image: both multiples of `factor`, the pixel
    count within [min_pixels, max_pixels], the aspect ratio kept as closely as possible."""
    if max(height, width) / min(height, width) > QWEN_MAX_RATIO:
        raise BatchVisionError(
            ErrorCode.INVALID_PARAMETER,
            f"image aspect ratio above {QWEN_MAX_RATIO}:1 cannot be sent to this model",
        )
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def fit_side(size: Size, side: int) -> Size:
    """`size` shrunk so its longest side is at most `side` (never enlarged)."""
    width, height = size
    scale = min(1.0, side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def sent_size(size: Size, side: int, grounding: Grounding) -> Size:
    """The size an image is sent at: within `side`, and for Qwen2.5-VL the size it resizes to."""
    width, height = fit_side(size, side)
    if grounding != "qwen2.5-vl":
        return width, height
    h_bar, w_bar = smart_resize(height, width)
    return w_bar, h_bar


def box_prompt(target: str, grounding: Grounding) -> str:
    unit = _unit_phrase(grounding)
    return (
        f'Locate every "{target}" in the image. Answer only with JSON, no other text: '
        f'[{{"bbox_2d": [x1, y1, x2, y2], "label": "{target}"}}, ...] with {unit}; '
        "answer [] if there is none."
    )


def point_prompt(target: str, grounding: Grounding) -> str:
    unit = _unit_phrase(grounding)
    return (
        f'Point to every "{target}" in the image. Answer only with JSON, no other text: '
        f'[{{"point_2d": [x, y], "label": "{target}"}}, ...] with {unit}; '
        "answer [] if there is none."
    )


def _unit_phrase(grounding: Grounding) -> str:
    if grounding == "norm1000":
        return "coordinates normalised to 0-1000 of the image width and height"
    return "coordinates in pixels of the image"


def unparseable(text: str, why: str) -> BatchVisionError:
    shown = text[:SHOWN_CHARS]
    return BatchVisionError(
        ErrorCode.PROCESSING_ERROR,
        f"the vision-language model's answer could not be read ({why}): {shown!r}",
    )


def parse_json_answer(text: str) -> Any:
    """The JSON value of an answer, tolerating one ```json fence around it."""
    body = text.strip()
    if body.startswith("```"):
        first_newline = body.find("\n")
        if first_newline < 0 or not body.endswith("```"):
            raise unparseable(text, "an unclosed code fence")
        body = body[first_newline + 1 : -3].strip()
    try:
        return json.loads(body)
    except ValueError:
        raise unparseable(text, "not JSON") from None


def read_boxes(text: str, grounding: Grounding, sent: Size) -> tuple[PixelBox, ...]:
    """`[{"bbox_2d": [x1, y1, x2, y2]}, …]` as fractions of the sent image."""
    boxes = []
    for entry in _entries(text, "bbox_2d"):
        x1, y1, x2, y2 = _coordinates(entry, 4, text)
        left, top = _fraction(x1, 0, grounding, sent, text), _fraction(y1, 1, grounding, sent, text)
        right, bottom = (
            _fraction(x2, 0, grounding, sent, text),
            _fraction(y2, 1, grounding, sent, text),
        )
        if right < left or bottom < top:
            raise unparseable(text, "a box whose corners are reversed")
        boxes.append((left, top, right, bottom))
    return tuple(boxes)


def read_points(text: str, grounding: Grounding, sent: Size) -> tuple[Point, ...]:
    """`[{"point_2d": [x, y]}, …]` as fractions of the sent image."""
    points = []
    for entry in _entries(text, "point_2d"):
        x, y = _coordinates(entry, 2, text)
        points.append(
            (_fraction(x, 0, grounding, sent, text), _fraction(y, 1, grounding, sent, text))
        )
    return tuple(points)


def _entries(text: str, key: str) -> list[Any]:
    value = parse_json_answer(text)
    items = [value] if isinstance(value, dict) else value
    if not isinstance(items, list) or not all(isinstance(i, dict) and key in i for i in items):
        raise unparseable(text, f"expected a JSON list of objects with '{key}'")
    return [item[key] for item in items]


def _coordinates(entry: Any, count: int, text: str) -> list[float]:
    numbers = entry if isinstance(entry, list) else []
    valid = all(
        isinstance(n, int | float) and not isinstance(n, bool) and math.isfinite(n) for n in numbers
    )
    if len(numbers) != count or not valid:
        raise unparseable(text, f"expected {count} numbers per coordinate list")
    return [float(n) for n in numbers]


def _fraction(value: float, axis: int, grounding: Grounding, sent: Size, text: str) -> float:
    extent = 1000.0 if grounding == "norm1000" else float(sent[axis])
    fraction = value / extent
    if not -_SLACK <= fraction <= 1 + _SLACK:
        raise unparseable(text, "a coordinate outside the image")
    return min(max(fraction, 0.0), 1.0)


def native_boxes(objects: Any, text: str) -> tuple[PixelBox, ...]:
    """The native REST `objects` (`x_min`… in 0..1) as fractions."""
    keys = ("x_min", "y_min", "x_max", "y_max")
    rows = _native_rows(objects, keys, text)
    boxes = tuple((r[0], r[1], r[2], r[3]) for r in rows)
    if any(x2 < x1 or y2 < y1 for x1, y1, x2, y2 in boxes):
        raise unparseable(text, "a box whose corners are reversed")
    return boxes


def native_points(points: Any, text: str) -> tuple[Point, ...]:
    return tuple((r[0], r[1]) for r in _native_rows(points, ("x", "y"), text))


def _native_rows(rows: Any, keys: Sequence[str], text: str) -> list[list[float]]:
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise unparseable(text, "expected a list of coordinate objects")
    out = []
    for row in rows:
        values = _coordinates([row.get(k) for k in keys], len(keys), text)
        if not all(-_SLACK <= v <= 1 + _SLACK for v in values):
            raise unparseable(text, "a coordinate outside 0..1")
        out.append([min(max(v, 0.0), 1.0) for v in values])
    return out
