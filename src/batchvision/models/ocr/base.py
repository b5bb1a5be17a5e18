"""What every OCR engine returns: a page of blocks → lines → words with polygons and confidences.

Polygons are four (x, y) vertices, clockwise from top-left, in the pixel frame of the array the
engine was given; `OcrPage.to_dict` scales them to the original image and rounds to ints.
Confidences are in [0, 1]. A line's confidence is the mean of its words', a block's the mean of
its words' over all its lines, for every engine (so the two engines' figures mean the same thing).
A word's `language_confidence` is set by `settle_languages` (see `languages` for its definition).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, TypedDict

from batchvision.core.types import RGBArray
from batchvision.models.ocr.languages import script_of, script_share

Point = tuple[float, float]
Polygon = tuple[Point, Point, Point, Point]


@dataclass
class OcrWord:
    text: str
    polygon: Polygon
    confidence: float
    language: str
    language_confidence: float = 0.0  # set with the language by `settle_languages`


@dataclass
class OcrLine:
    polygon: Polygon
    text: str
    words: list[OcrWord]

    @property
    def confidence(self) -> float:
        return _mean([w.confidence for w in self.words])


@dataclass
class OcrBlock:
    polygon: Polygon
    lines: list[OcrLine]

    @property
    def confidence(self) -> float:
        return _mean([w.confidence for line in self.lines for w in line.words])


class OcrOutput(TypedDict):
    """What the `ocr` skill returns for one image; `pages` holds blocks → lines → words, each
    with an integer pixel `polygon` and a `confidence` (words: `language` and its confidence)."""

    engine: str
    languages: list[str]
    text: str
    pages: list[dict[str, Any]]


@dataclass
class OcrPage:
    engine: str
    languages: list[str]
    blocks: list[OcrBlock] = field(default_factory=list)

    @property
    def words(self) -> list[OcrWord]:
        return [w for block in self.blocks for line in block.lines for w in line.words]

    def found_languages(self) -> list[str]:
        """The languages of the page's words, the most words first (what `*` reports)."""
        return [code for code, _ in Counter(w.language for w in self.words).most_common()]

    @property
    def text(self) -> str:
        return "\n\n".join("\n".join(line.text for line in block.lines) for block in self.blocks)

    def to_dict(self, width: int, height: int, scale: tuple[float, float]) -> OcrOutput:
        """The skill's output, polygons in pixels: `scale` maps engine pixels to the original."""
        sx, sy = scale

        def poly(p: Polygon) -> list[list[int]]:
            return [
                [_clamp(round(x * sx), 0, width), _clamp(round(y * sy), 0, height)] for x, y in p
            ]

        blocks = [
            {
                "polygon": poly(block.polygon),
                "confidence": _conf(block.confidence),
                "lines": [
                    {
                        "polygon": poly(line.polygon),
                        "text": line.text,
                        "confidence": _conf(line.confidence),
                        "words": [
                            {
                                "polygon": poly(word.polygon),
                                "text": word.text,
                                "confidence": _conf(word.confidence),
                                "language": word.language,
                                "language_confidence": _conf(word.language_confidence),
                            }
                            for word in line.words
                        ],
                    }
                    for line in block.lines
                ],
            }
            for block in self.blocks
        ]
        return {
            "engine": self.engine,
            "languages": list(self.languages),
            "text": self.text,
            "pages": [{"width": width, "height": height, "blocks": blocks}],
        }


@dataclass(frozen=True)
class EngineStatus:
    name: str
    available: bool
    detail: str  # version and backend when available, what is missing when not
    languages: tuple[str, ...]  # ISO codes this engine can read here

    def to_dict(self) -> dict[str, Any]:
        return {
            "engine": self.name,
            "available": self.available,
            "detail": self.detail,
            "languages": list(self.languages),
        }


class OcrEngine(ABC):
    """One OCR engine. `recognize` is blocking CPU work: call it on the engine's CPU pool."""

    name: str

    @abstractmethod
    def status(self) -> EngineStatus:
        """Cheap after the first call: whether the engine and its language data are installed."""

    @abstractmethod
    def require(self, languages: list[str]) -> None:
        """Raise model_unavailable unless the engine can read `languages` here."""

    @abstractmethod
    def recognize(self, pixels: RGBArray, languages: list[str]) -> OcrPage:
        """OCR one RGB uint8 HxWx3 image; `languages` are validated ISO codes."""


def settle_languages(lines: list[OcrLine]) -> None:
    """Each word's language confidence; a word without letters (a number, a dash) takes the
    language most of its line's lettered words have, as sure as that majority is."""
    for line in lines:
        lettered = [w.language for w in line.words if _has_letters(w.text)]
        common = max(lettered, key=lettered.count) if lettered else None
        for word in line.words:
            if _has_letters(word.text):
                share = script_share(word.text, word.language)
            elif common is not None:
                word.language = common
                share = lettered.count(common) / len(lettered)
            else:
                share = 0.0  # a line of digits alone says nothing about its language
            word.language_confidence = word.confidence * share


def _has_letters(text: str) -> bool:
    return any(ch.isalpha() for ch in text)


def join_words(words: list[str]) -> str:
    """Words joined by spaces, except between two Chinese/Japanese characters (no spaces there)."""
    text = ""
    for word in words:
        if text and not (_is_cjk(text[-1]) and _is_cjk(word[0])):
            text += " "
        text += word
    return text


def _is_cjk(char: str) -> bool:
    return script_of(char) in ("han", "kana")


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _conf(value: float) -> float:
    return round(min(1.0, max(0.0, value)), 4)


def _clamp(value: int, low: int, high: int) -> int:
    return min(high, max(low, value))


def rect(x1: float, y1: float, x2: float, y2: float) -> Polygon:
    return ((x1, y1), (x2, y1), (x2, y2), (x1, y2))


def bounding_polygon(polygons: list[Polygon]) -> Polygon:
    """Axis-aligned box around polygons (for blocks assembled from lines)."""
    xs = [x for p in polygons for x, _ in p]
    ys = [y for p in polygons for _, y in p]
    return rect(min(xs), min(ys), max(xs), max(ys))


# Line and block assembly from lines found piecewise (PP-OCR's detections, tiles of a page).
_BLOCK_GAP = 0.8
_BLOCK_HEIGHT_RATIO = 1.6
_ROW_HEIGHT_RATIO = 2.0  # a short word ("in") next to one with ascenders and descenders


def _span(polygon: Polygon) -> tuple[float, float, float, float]:
    xs = [x for x, _ in polygon]
    ys = [y for _, y in polygon]
    return min(xs), min(ys), max(xs), max(ys)


def merge_rows(lines: list[OcrLine]) -> list[OcrLine]:
    """Join detections that continue one another on the same row (the detector sometimes boxes
    the words of one line separately): they overlap vertically by half the smaller height, have
    heights within 2x, and the horizontal gap is under the smaller height."""
    rows: list[list[OcrLine]] = []
    for line in sorted(lines, key=lambda ln: _span(ln.polygon)[0]):
        x1, y1, _x2, y2 = _span(line.polygon)
        h = max(y2 - y1, 1.0)
        for row in rows:
            rx1, ry1, rx2, ry2 = _span(row[-1].polygon)
            rh = max(ry2 - ry1, 1.0)
            overlap = min(y2, ry2) - max(y1, ry1)
            if (
                overlap >= 0.5 * min(h, rh)
                and max(h, rh) / min(h, rh) <= _ROW_HEIGHT_RATIO
                and x1 - rx2 <= min(h, rh)
                and x1 >= rx1
            ):
                row.append(line)
                break
        else:
            rows.append([line])
    merged = []
    for row in rows:
        if len(row) == 1:
            merged.append(row[0])
            continue
        merged.append(
            OcrLine(
                bounding_polygon([ln.polygon for ln in row]),
                join_words([ln.text for ln in row]),
                [w for ln in row for w in ln.words],
            )
        )
    return merged


def group_blocks(lines: list[OcrLine]) -> list[OcrBlock]:
    boxes = [bounding_polygon([line.polygon]) for line in lines]
    spans = [(b[0][0], b[0][1], b[2][0], b[2][1]) for b in boxes]  # x1, y1, x2, y2
    parent = list(range(len(lines)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, (ax1, ay1, ax2, ay2) in enumerate(spans):
        for j in range(i + 1, len(spans)):
            bx1, by1, bx2, by2 = spans[j]
            ha, hb = max(ay2 - ay1, 1.0), max(by2 - by1, 1.0)
            if max(ha, hb) / min(ha, hb) > _BLOCK_HEIGHT_RATIO:
                continue
            if min(ax2, bx2) <= max(ax1, bx1):  # no shared column
                continue
            gap = max(ay1, by1) - min(ay2, by2)
            if gap <= _BLOCK_GAP * min(ha, hb):
                parent[find(j)] = find(i)

    groups: dict[int, list[int]] = {}
    for i in range(len(lines)):
        groups.setdefault(find(i), []).append(i)
    blocks = []
    for members in groups.values():
        members.sort(key=lambda i: (spans[i][1], spans[i][0]))
        block_lines = [lines[i] for i in members]
        blocks.append(OcrBlock(bounding_polygon([ln.polygon for ln in block_lines]), block_lines))
    blocks.sort(key=lambda b: (b.polygon[0][1], b.polygon[0][0]))
    return blocks
