"""Overlapping tiles over a large image, for the skills that read every pixel (barcode, ocr).

A whole-image pass over a 64 MP image costs several times the image in working copies (zxing-cpp
made 246 MB of luminance and bit matrices beside a 7900x7900 RGB array, Tesseract a 32-bit copy
and its own binarized ones). An image of more than `side`² pixels is read instead as tiles of at
most `side` x `side`, each a view of the decoded array, so a skill's working memory follows the
tile, not the image. Neighbouring tiles share `overlap` pixels, so anything up to `overlap` pixels
wide and high lies whole inside at least one tile, wherever it is.
"""

from __future__ import annotations

from dataclasses import dataclass

from batchvision.core.settings import Settings
from batchvision.core.types import RGBArray

Span = tuple[int, int, float, float]  # start, length, and the part of it the tile owns


@dataclass(frozen=True)
class Tile:
    x: int
    y: int
    width: int
    height: int
    # The part of the image this tile owns (x1, y1, x2, y2): from the middle of the overlap with
    # each neighbour, or the image's edge. The cores of a grid partition the image, so a word
    # whose centre is in a core belongs to that tile alone; a word of up to half the overlap
    # with its centre there lies whole inside the tile.
    core: tuple[float, float, float, float]

    def of(self, pixels: RGBArray) -> RGBArray:
        """The tile's pixels: a view, not a copy."""
        return pixels[self.y : self.y + self.height, self.x : self.x + self.width]

    def owns(self, cx: float, cy: float) -> bool:
        x1, y1, x2, y2 = self.core
        return x1 <= cx < x2 and y1 <= cy < y2


@dataclass(frozen=True)
class TileGrid:
    side: int
    overlap: int

    @classmethod
    def from_settings(cls, settings: Settings) -> TileGrid:
        return cls(settings.tile_side, settings.tile_overlap)

    def tile_pixels(self, width: int, height: int) -> int:
        """Pixels of the largest tile an image of this size is read in."""
        return min(width * height, self.side * self.side)

    def needed(self, width: int, height: int) -> bool:
        return width * height > self.side * self.side

    def spans(self, length: int) -> list[Span]:
        """Tiles along one axis: every `side - overlap`, the last one flush with the end."""
        if length <= self.side:
            return [(0, length, 0.0, float(length))]
        step = self.side - self.overlap
        starts = [*range(0, length - self.side, step), length - self.side]
        ends = [start + self.side for start in starts]
        cuts = [0.0] + [(starts[i + 1] + ends[i]) / 2 for i in range(len(starts) - 1)]
        cuts.append(float(length))
        return [(start, self.side, cuts[i], cuts[i + 1]) for i, start in enumerate(starts)]

    def tiles(self, width: int, height: int) -> list[Tile]:
        """Row by row, top to bottom; one tile covering everything when none are needed."""
        if not self.needed(width, height):
            return [Tile(0, 0, width, height, (0.0, 0.0, float(width), float(height)))]
        return [
            Tile(x, y, w, h, (cx1, cy1, cx2, cy2))
            for y, h, cy1, cy2 in self.spans(height)
            for x, w, cx1, cx2 in self.spans(width)
        ]
