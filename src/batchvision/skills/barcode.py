"""`barcode`: 1D and 2D barcodes read with zxing-cpp: text, format and the symbol's corners.

Every format zxing-cpp can read is on by default; `formats` narrows the search. Format names are
zxing-cpp's own identifiers (`QRCode`, `EAN13`, `UPCA`, `DataMatrix`, ...), matched without regard
to case, spaces, dashes or underscores, so `"ean-13"`, `"EAN_13"` and `"EAN-13"` all name `EAN13`;
zxing-cpp's display names (`"QR Code"`, `"Data Matrix"`, `"Pharmazentralnummer"`) work too, as do
its groups (`AllLinear`, `AllMatrix`, `AllRetail`, `AllIndustrial`, `AllGS1`, `All`).

Decoding needs every pixel, so the skill asks for full-resolution images, and all zxing-cpp work
runs on the engine's bounded CPU pool.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NotRequired, TypedDict, cast

import numpy as np
import zxingcpp
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from batchvision.core.errors import BatchVisionError, ErrorCode
from batchvision.core.types import DecodedImage, RGBArray
from batchvision.skills.base import Skill, SkillOutput
from batchvision.skills.tiles import TileGrid

Format = zxingcpp.BarcodeFormat

# Groups accepted in `formats` as shorthands (AllCreatable says nothing about reading).
_GROUPS = ("All", "AllReadable", "AllLinear", "AllMatrix", "AllRetail", "AllIndustrial", "AllGS1")

# The try_harder upscale pass: only images up to this longer side are decoded again at 2x (small,
# low-resolution symbols gain from it; a large photo would only cost time and memory).
_UPSCALE_MAX_SIDE = 1024

# What zxing-cpp allocates reading an array, per pixel: its luminance and bit matrices, and the
# downscaled copies it tries (246 MB measured on a 7900x7900 image, 3.9 bytes per pixel), plus a
# band of the halving when tiled.
_ZXING_BYTES_PER_PIXEL = 5

# Content types whose `text` may not carry the payload faithfully: the raw bytes are added.
_BINARY_CONTENT = frozenset(
    {zxingcpp.ContentType.Binary, zxingcpp.ContentType.Mixed, zxingcpp.ContentType.UnknownECI}
)
_CONTENT_TYPE_NAMES = {
    zxingcpp.ContentType.Text: "text",
    zxingcpp.ContentType.Binary: "binary",
    zxingcpp.ContentType.Mixed: "mixed",
    zxingcpp.ContentType.GS1: "gs1",
    zxingcpp.ContentType.ISO15434: "iso15434",
    zxingcpp.ContentType.UnknownECI: "unknown_eci",
}


def name_key(name: str) -> str:
    """The form names are compared in: lower case, letters and digits only."""
    return "".join(ch for ch in name.lower() if ch.isalnum())


def _readable() -> list[Format]:
    return list(zxingcpp.barcode_formats_list(zxingcpp.BarcodeFormats([Format.AllReadable])))


def _name_table() -> tuple[dict[str, Format], tuple[str, ...]]:
    readable = _readable()
    groups = [Format.__members__[group] for group in _GROUPS]
    table: dict[str, Format] = {}
    for fmt in readable:
        table[name_key(fmt.name)] = fmt
        table.setdefault(name_key(str(fmt)), fmt)  # display name: "QR Code", "EAN-13"
    for group in groups:
        table[name_key(group.name)] = group
    for alias, fmt in Format.__members__.items():  # older spellings: DataBarExpanded, LinearCodes
        if fmt in readable or fmt in groups:
            table.setdefault(name_key(alias), fmt)
    canonical = tuple(sorted({fmt.name for fmt in readable}, key=str.lower)) + _GROUPS
    return table, canonical


FORMAT_NAMES, SUPPORTED_FORMATS = _name_table()


def resolve_formats(names: Sequence[str]) -> tuple[Format, ...]:
    """zxing-cpp formats for `names`; invalid_parameter naming the valid ones otherwise."""
    unknown = [name for name in names if name_key(name) not in FORMAT_NAMES]
    if unknown:
        raise BatchVisionError(
            ErrorCode.INVALID_PARAMETER,
            f"barcode: unknown formats {unknown}; valid formats (case-insensitive): "
            + ", ".join(SUPPORTED_FORMATS),
        )
    return tuple(dict.fromkeys(FORMAT_NAMES[name_key(name)] for name in names))


class BarcodeParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    formats: list[str] | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="read only these zxing-cpp formats or groups (e.g. QRCode, EAN13, AllLinear); "
        "case-insensitive; default: every readable format",
    )
    max_symbols: int = Field(32, ge=1, le=255, description="report at most this many per image")
    try_rotate: bool = Field(True, description="also look for symbols rotated by 90/270 degrees")
    try_harder: bool = Field(
        True,
        description="when a first pass finds nothing, retry with a global-histogram binarizer "
        "and, for images up to 1024 px, at twice the size",
    )


@dataclass(frozen=True)
class ReadOptions:
    formats: tuple[Format, ...] | None
    max_symbols: int
    try_rotate: bool
    try_harder: bool
    # Report an EAN-13 with a leading 0 as UPC-A (the same symbol), see `_reported_format`.
    upca: bool


def read_options(params: BarcodeParams) -> ReadOptions:
    formats = None if params.formats is None else resolve_formats(params.formats)
    if formats is None or Format.All in formats or Format.AllReadable in formats:
        formats, upca = None, True
    else:
        covered = zxingcpp.barcode_formats_list(zxingcpp.BarcodeFormats(list(formats)))
        upca = Format.UPCA in list(covered)
    return ReadOptions(formats, params.max_symbols, params.try_rotate, params.try_harder, upca)


def _read(
    image: RGBArray,
    options: ReadOptions,
    binarizer: zxingcpp.Binarizer = zxingcpp.Binarizer.LocalAverage,
) -> list[zxingcpp.Barcode]:
    if not image.flags.c_contiguous:
        view: object = image  # a tile: zxing-cpp reads the strided view without a copy
    elif image.ndim == 3:
        view = zxingcpp.ImageView(image, image.shape[1], image.shape[0], zxingcpp.ImageFormat.RGB)
    else:
        view = image
    if options.formats is None:
        return zxingcpp.read_barcodes(
            view, try_rotate=options.try_rotate, try_invert=True, binarizer=binarizer
        )
    return zxingcpp.read_barcodes(
        view,
        formats=zxingcpp.BarcodeFormats(list(options.formats)),
        try_rotate=options.try_rotate,
        try_invert=True,
        binarizer=binarizer,
    )


class Barcode(TypedDict):
    format: str
    symbology: str
    text: str
    content_type: str
    symbology_identifier: str
    ec_level: str | None
    orientation: int
    polygon: list[list[float]]  # four corners in pixels, clockwise from where the text starts
    box: list[float]  # x1, y1, x2, y2 in pixels
    bytes_base64: NotRequired[str]  # binary content only


class BarcodeOutput(TypedDict):
    barcodes: list[Barcode]


@dataclass(frozen=True)
class _Found:
    """A symbol zxing-cpp read in a tile or level: at `origin + factor * p` in `image.pixels`."""

    barcode: zxingcpp.Barcode
    origin: tuple[float, float] = (0.0, 0.0)
    factor: float = 1.0


def read_barcodes(
    image: DecodedImage, options: ReadOptions, grid: TileGrid | None = None
) -> BarcodeOutput:
    """Decode one image (blocking: run it on the engine's CPU pool). With `grid`, an image of
    more pixels than one tile is read in tiles (see `_read_tiled`)."""
    height, width = image.pixels.shape[:2]
    if grid is not None and grid.needed(width, height):
        found = _read_tiled(image.pixels, options, grid)
    else:
        found = _read_whole(np.ascontiguousarray(image.pixels), options)
    sx, sy = image.scale
    return {
        "barcodes": [_describe(f, sx, sy, image, options) for f in found[: options.max_symbols]]
    }


def _read_whole(pixels: RGBArray, options: ReadOptions) -> list[_Found]:
    height, width = pixels.shape[:2]
    found = _read(pixels, options)
    if found or not options.try_harder:
        return [_Found(b) for b in found]
    found = _read(pixels, options, zxingcpp.Binarizer.GlobalHistogram)
    if found or max(width, height) > _UPSCALE_MAX_SIDE:
        return [_Found(b) for b in found]
    gray = Image.fromarray(pixels).convert("L")
    larger = gray.resize((width * 2, height * 2), Image.Resampling.BICUBIC)
    return [_Found(b, factor=0.5) for b in _read(np.asarray(larger), options)]


def _read_tiled(pixels: RGBArray, options: ReadOptions, grid: TileGrid) -> list[_Found]:
    """Full-resolution tiles (views of `pixels`), then the same grid over the image halved, and
    halved again, until one tile holds it all. A symbol up to `grid.overlap` px lies whole in
    one full-resolution tile; a larger one, whole in a tile of some halved level, where its
    modules are still at least overlap/2 / modules px wide (2.9 px for a 177-module QR code at
    the default 512). A symbol found twice (in two tiles or two levels) is reported once."""
    found = _read_levels(pixels, options, grid, zxingcpp.Binarizer.LocalAverage)
    if not found and options.try_harder:
        found = _read_levels(pixels, options, grid, zxingcpp.Binarizer.GlobalHistogram)
    return found


def _read_levels(
    pixels: RGBArray, options: ReadOptions, grid: TileGrid, binarizer: zxingcpp.Binarizer
) -> list[_Found]:
    found: list[_Found] = []
    level: RGBArray = pixels
    factor = 1.0
    while True:
        height, width = level.shape[:2]
        for tile in grid.tiles(width, height):
            origin = (tile.x * factor, tile.y * factor)
            for barcode in _read(tile.of(level), options, binarizer):
                _add_new(found, _Found(barcode, origin, factor))
        if not grid.needed(width, height):
            return found
        level, factor = _halved_gray(level, grid.tile_pixels(width, height)), factor * 2


def _halved_gray(pixels: RGBArray, band_pixels: int) -> RGBArray:
    """`pixels` in gray at half the size (2x2 box), converted in bands of rows of about
    `band_pixels` pixels so the temporary copies stay the size of a tile, not of the image."""
    height, width = pixels.shape[:2]
    out = np.empty((height // 2, width // 2), np.uint8)
    band_rows = max(2, band_pixels // width)
    band_rows -= band_rows % 2
    for top in range(0, out.shape[0] * 2, band_rows):
        band = Image.fromarray(np.ascontiguousarray(pixels[top : top + band_rows]))
        half = np.asarray(band.convert("L").reduce(2))
        out[top // 2 : top // 2 + half.shape[0]] = half[:, : out.shape[1]]
    return out


def _add_new(found: list[_Found], candidate: _Found) -> None:
    """Append unless the same symbol (format, bytes, and centres closer than half its size) is
    there already: the overlap and the halved levels see a symbol more than once."""
    cx, cy, size = _centre_and_size(candidate)
    for known in found:
        if (known.barcode.format, known.barcode.bytes) != (
            candidate.barcode.format,
            candidate.barcode.bytes,
        ):
            continue
        kx, ky, known_size = _centre_and_size(known)
        if abs(kx - cx) + abs(ky - cy) < max(size, known_size) / 2:
            return
    found.append(candidate)


def _centre_and_size(found: _Found) -> tuple[float, float, float]:
    points = _corners(found)
    xs = [x for x, _ in points]
    ys = [y for _, y in points]
    return sum(xs) / 4, sum(ys) / 4, max(max(xs) - min(xs), max(ys) - min(ys), 1.0)


def _corners(found: _Found) -> list[tuple[float, float]]:
    """The symbol's corners in `image.pixels` coordinates."""
    position = found.barcode.position
    ox, oy = found.origin
    return [
        (ox + point.x * found.factor, oy + point.y * found.factor)
        for point in (
            position.top_left,
            position.top_right,
            position.bottom_right,
            position.bottom_left,
        )
    ]


def _reported_format(barcode: zxingcpp.Barcode, options: ReadOptions) -> Format:
    # zxing-cpp 3 names a UPC-A symbol EAN-13 (with a leading 0) unless UPC-A alone was asked for.
    # The bars of a UPC-A and of an EAN-13 starting with 0 are identical; like ZXing and zxing-cpp
    # 2, report the more specific UPC-A whenever UPC-A is among the requested formats.
    fmt = barcode.format
    text = barcode.text
    if options.upca and fmt == Format.EAN13 and len(text) == 13 and text.startswith("0"):
        return Format.UPCA
    return fmt


def _describe(
    found: _Found, sx: float, sy: float, image: DecodedImage, options: ReadOptions
) -> Barcode:
    barcode = found.barcode
    polygon = [
        [
            round(min(max(x * sx, 0.0), float(image.width)), 2),
            round(min(max(y * sy, 0.0), float(image.height)), 2),
        ]
        for x, y in _corners(found)
    ]
    if _signed_area(polygon) < 0:
        # Counter-clockwise on screen: a 1D symbol read against its bars' top/bottom (they are
        # interchangeable for zxing-cpp) or a mirrored symbol. Swap the top and bottom edges so
        # the polygon is clockwise and starts where the symbol's text reads from.
        polygon = [polygon[3], polygon[2], polygon[1], polygon[0]]
    xs = [x for x, _ in polygon]
    ys = [y for _, y in polygon]
    content_type = barcode.content_type
    out: Barcode = {
        "format": _reported_format(barcode, options).name,
        "symbology": barcode.symbology.name,
        "text": barcode.text,
        "content_type": _CONTENT_TYPE_NAMES.get(content_type, content_type.name.lower()),
        "symbology_identifier": barcode.symbology_identifier,
        "ec_level": barcode.ec_level or None,
        "orientation": int(barcode.orientation),
        "polygon": polygon,
        "box": [min(xs), min(ys), max(xs), max(ys)],
    }
    if content_type in _BINARY_CONTENT:
        out["bytes_base64"] = base64.b64encode(barcode.bytes).decode("ascii")
    return out


def _signed_area(polygon: list[list[float]]) -> float:
    """Twice the shoelace area; positive when the points run clockwise in image coordinates."""
    total = 0.0
    for (x1, y1), (x2, y2) in zip(polygon, polygon[1:] + polygon[:1], strict=True):
        total += x1 * y2 - x2 * y1
    return total


class BarcodeSkill(Skill):
    name = "barcode"
    description = (
        "Barcodes and 2D codes (QR, Data Matrix, Aztec, PDF417, EAN/UPC, Code 128, ...) via "
        "zxing-cpp: decoded text, format and corner points in pixels."
    )
    Params = BarcodeParams

    def check_params(self, params: BaseModel) -> None:
        read_options(cast(BarcodeParams, params))

    def decode_side(self, params: BaseModel) -> int | None:
        return None  # full resolution: modules of a barcode can be a pixel or two wide

    def working_bytes(self, params: BaseModel, width: int, height: int) -> int:
        grid = TileGrid.from_settings(self.ctx.settings)
        if not grid.needed(width, height):
            return width * height * _ZXING_BYTES_PER_PIXEL
        # one tile at a time, plus the halved gray levels (1/4 + 1/16 + ... of a byte per pixel)
        levels = width * height // 3
        return grid.tile_pixels(width, height) * _ZXING_BYTES_PER_PIXEL + levels

    async def run(self, images: list[DecodedImage], params: BaseModel) -> list[SkillOutput]:
        options = read_options(cast(BarcodeParams, params))
        grid = TileGrid.from_settings(self.ctx.settings)
        engine = self.ctx.engine
        return await self.per_item(
            engine.run_cpu(read_barcodes, image, options, grid) for image in images
        )
