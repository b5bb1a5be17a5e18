"""One OCR page from the pages of a large image's overlapping tiles.

Each tile is read on its own (one at a time, so the engine's working copies follow the tile). A
word belongs to the tile that owns its centre (`Tile.owns`): a word up to half the overlap wide
and high with its centre in a tile's core lies whole inside that tile, so it is read whole and
once. The words each tile keeps form its lines again; lines that continue one another across a
seam are joined by the same rule that joins PP-OCR's detections on one row, and lines are grouped
into blocks by proximity (`group_blocks`), whatever engine read them. Text taller than half the
overlap, or a word wider than that lying across a seam, can come out split in two.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from batchvision.models.ocr.base import (
    OcrLine,
    OcrPage,
    OcrWord,
    Polygon,
    bounding_polygon,
    group_blocks,
    join_words,
    merge_rows,
    settle_languages,
)
from batchvision.skills.tiles import Tile


def merge_pages(placed: Sequence[tuple[Tile, OcrPage]], detected: bool) -> OcrPage:
    """`detected`: the languages were detected (`*`), so the page reports those found."""
    lines = [line for tile, page in placed for line in _kept_lines(tile, page)]
    lines = merge_rows(lines)
    settle_languages(lines)
    engines = Counter(page.engine for _, page in placed for _ in page.words)
    first = placed[0][1]
    engine = engines.most_common(1)[0][0] if engines else first.engine
    merged = OcrPage(engine, list(first.languages), group_blocks(lines))
    if detected:
        merged.languages = merged.found_languages()
    return merged


def _kept_lines(tile: Tile, page: OcrPage) -> list[OcrLine]:
    kept: list[OcrLine] = []
    for block in page.blocks:
        for line in block.lines:
            words = [_moved(w, tile) for w in line.words]
            words = [w for w in words if tile.owns(*_centre(w.polygon))]
            if words:
                polygon = bounding_polygon([w.polygon for w in words])
                kept.append(OcrLine(polygon, join_words([w.text for w in words]), words))
    return kept


def _moved(word: OcrWord, tile: Tile) -> OcrWord:
    polygon = _shifted(word.polygon, tile.x, tile.y)
    return OcrWord(word.text, polygon, word.confidence, word.language, word.language_confidence)


def _shifted(polygon: Polygon, dx: float, dy: float) -> Polygon:
    a, b, c, d = ((x + dx, y + dy) for x, y in polygon)
    return (a, b, c, d)


def _centre(polygon: Polygon) -> tuple[float, float]:
    return sum(x for x, _ in polygon) / 4, sum(y for _, y in polygon) / 4
