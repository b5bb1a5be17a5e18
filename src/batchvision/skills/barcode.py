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

Format = zxingcpp.BarcodeFormat

# Groups accepted in `formats` as shorthands (AllCreatable says nothing about reading).
_GROUPS = ("All", "AllReadable", "AllLinear", "AllMatrix", "AllRetail", "AllIndustrial", "AllGS1")

# The try_harder upscale pass: only images up to this longer side are decoded again at 2x (small,
# low-resolution symbols gain from it; a large photo would only cost time and memory).
_UPSCALE_MAX_SIDE = 1024

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
    if image.ndim == 3:
        view: object = zxingcpp.ImageView(
            image, image.shape[1], image.shape[0], zxingcpp.ImageFormat.RGB
        )
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


def read_barcodes(image: DecodedImage, options: ReadOptions) -> BarcodeOutput:
    """Decode one image (blocking: run it on the engine's CPU pool)."""
    pixels = np.ascontiguousarray(image.pixels)
    height, width = pixels.shape[:2]
    found = _read(pixels, options)
    factor = 1.0  # pixels of the array zxing read -> pixels of `image.pixels`
    if not found and options.try_harder:
        found = _read(pixels, options, zxingcpp.Binarizer.GlobalHistogram)
        if not found and max(width, height) <= _UPSCALE_MAX_SIDE:
            gray = Image.fromarray(pixels).convert("L")
            larger = gray.resize((width * 2, height * 2), Image.Resampling.BICUBIC)
            found = _read(np.asarray(larger), options)
            factor = 0.5
    sx, sy = image.scale
    return {
        "barcodes": [
            _describe(barcode, factor * sx, factor * sy, image, options)
            for barcode in found[: options.max_symbols]
        ]
    }


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
    barcode: zxingcpp.Barcode, sx: float, sy: float, image: DecodedImage, options: ReadOptions
) -> Barcode:
    position = barcode.position
    corners = (position.top_left, position.top_right, position.bottom_right, position.bottom_left)
    polygon = [
        [
            round(min(max(point.x * sx, 0.0), float(image.width)), 2),
            round(min(max(point.y * sy, 0.0), float(image.height)), 2),
        ]
        for point in corners
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

    async def run(self, images: list[DecodedImage], params: BaseModel) -> list[SkillOutput]:
        options = read_options(cast(BarcodeParams, params))
        engine = self.ctx.engine
        return await self.per_item(
            engine.run_cpu(read_barcodes, image, options) for image in images
        )
