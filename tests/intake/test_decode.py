"""Tests for `decode_image`: every allowed format, orientation, colour modes, limits and refusals.

Every image is generated here (Pillow/numpy, in memory); the real photos are only read from
../shared/evaldata and never copied.
"""

from __future__ import annotations

import io
import struct
import time
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import pillow_heif
import pytest
from PIL import Image, ImageFile, features

from batchvision.core.errors import BatchVisionError, ErrorCode
from batchvision.core.types import DecodedImage
from batchvision.intake.decode import (
    DECODING_BYTES_PER_PIXEL,
    MIN_JPEG_BYTES_PER_PIXEL,
    decode_image,
    decoding_cost,
    describe,
)
from conftest import COCO_IMAGES, EVALDATA, coco_image

pillow_heif.register_heif_opener()

MAX_PIXELS = 100_000_000
RED = (220, 30, 30)
BLUE = (30, 30, 220)
WHITE = (255, 255, 255)
GREY = (128, 128, 128)


# ----------------------------------------------------------------------------- helpers


def encode(image: Image.Image, fmt: str, **params: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **params)
    return buf.getvalue()


def decode(data: bytes, **kwargs: Any) -> DecodedImage:
    kwargs.setdefault("max_pixels", MAX_PIXELS)
    return decode_image(data, **kwargs)


def error_of(data: bytes, **kwargs: Any) -> BatchVisionError:
    with pytest.raises(BatchVisionError) as info:
        decode(data, **kwargs)
    return info.value


def two_tone(width: int = 64, height: int = 48) -> Image.Image:
    """Left half RED, right half BLUE."""
    arr = np.empty((height, width, 3), np.uint8)
    arr[:, : width // 2] = RED
    arr[:, width // 2 :] = BLUE
    return Image.fromarray(arr)


def region_mean(pixels: npt.NDArray[np.uint8], rows: slice, cols: slice) -> npt.NDArray[Any]:
    return pixels[rows, cols].reshape(-1, 3).mean(axis=0)


def assert_colour(actual: Any, expected: tuple[int, int, int], tolerance: float) -> None:
    diff = np.abs(np.asarray(actual, dtype=np.float64) - np.asarray(expected, dtype=np.float64))
    assert diff.max() <= tolerance, f"{actual} is not within {tolerance} of {expected}"


def assert_rgb(image: DecodedImage) -> None:
    assert image.pixels.dtype == np.uint8
    assert image.pixels.ndim == 3
    assert image.pixels.shape[2] == 3


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
    )


def raw_png(width: int, height: int, bit_depth: int, colour_type: int, idat: bytes) -> bytes:
    """A PNG written by hand, for what Pillow will not write (RGB16, lying headers, bombs)."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def with_orientation(image: Image.Image, orientation: int, fmt: str = "JPEG") -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    params: dict[str, Any] = {"exif": exif}
    if fmt in ("JPEG", "WEBP", "AVIF"):
        params["quality"] = 95
    return encode(image, fmt, **params)


# ----------------------------------------------------------------------------- formats

LOSSY = 40.0
FORMATS: list[Any] = [
    # (save format, reported format, save params, colour tolerance)
    ("JPEG", "JPEG", {"quality": 95}, LOSSY),
    ("PNG", "PNG", {}, 0),
    ("WEBP", "WEBP", {"quality": 90}, LOSSY),
    ("WEBP", "WEBP", {"lossless": True}, 0),
    ("GIF", "GIF", {}, 0),
    ("BMP", "BMP", {}, 0),
    ("TIFF", "TIFF", {}, 0),
    ("TIFF", "TIFF", {"compression": "tiff_lzw"}, 0),
    ("HEIF", "HEIF", {"quality": 90}, LOSSY),
    pytest.param(
        "AVIF",
        "AVIF",
        {"quality": 90},
        LOSSY,
        marks=pytest.mark.skipif(not features.check("avif"), reason="Pillow built without AVIF"),
    ),
]


@pytest.mark.parametrize(("save_as", "reported", "params", "tolerance"), FORMATS)
def test_each_format_decodes_to_rgb(
    save_as: str, reported: str, params: dict[str, Any], tolerance: float
) -> None:
    data = encode(two_tone(64, 48), save_as, **params)
    image = decode(data)
    assert_rgb(image)
    assert image.pixels.shape == (48, 64, 3)
    assert (image.width, image.height) == (64, 48)
    assert image.format == reported
    assert image.file_size == len(data)
    assert image.scale == (1.0, 1.0)
    # Stay clear of the colour edge (chroma subsampling blurs it).
    assert_colour(region_mean(image.pixels, slice(4, 44), slice(4, 24)), RED, tolerance)
    assert_colour(region_mean(image.pixels, slice(4, 44), slice(40, 60)), BLUE, tolerance)


def test_mpo_is_reported_as_jpeg() -> None:
    data = encode(
        two_tone(), "MPO", save_all=True, append_images=[Image.new("RGB", (64, 48))], quality=95
    )
    assert Image.open(io.BytesIO(data)).format == "MPO"
    image = decode(data)
    assert image.format == "JPEG"
    assert_colour(region_mean(image.pixels, slice(4, 44), slice(4, 24)), RED, LOSSY)


def test_animated_gif_gives_first_frame() -> None:
    frames = [Image.new("RGB", (20, 10), colour) for colour in (RED, (30, 200, 30), BLUE)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 3
    image = decode(data)
    assert image.format == "GIF"
    assert image.pixels.shape == (10, 20, 3)
    assert (image.pixels == RED).all()


def test_describe_keys() -> None:
    data = encode(two_tone(30, 20), "PNG")
    facts = describe(decode(data))
    assert facts == {"width": 30, "height": 20, "format": "PNG", "file_size": len(data)}


def test_real_jpeg_decodes() -> None:
    if not COCO_IMAGES.is_dir():
        pytest.skip("evaldata not available")
    data = coco_image()
    image = decode(data)
    assert_rgb(image)
    assert image.format == "JPEG"
    assert image.pixels.shape == (image.height, image.width, 3)


# ----------------------------------------------------------------------------- orientation


def marked(width: int = 60, height: int = 40) -> npt.NDArray[np.uint8]:
    """Grey, with a red block in the stored top-left corner and a blue one at the top-right."""
    arr = np.full((height, width, 3), GREY, np.uint8)
    arr[:10, :10] = RED
    arr[:10, -10:] = BLUE
    return arr


def corner_means(pixels: npt.NDArray[np.uint8]) -> dict[str, npt.NDArray[Any]]:
    top, left = slice(2, 8), slice(2, 8)
    bottom, right = slice(-8, -2), slice(-8, -2)
    return {
        "top-left": region_mean(pixels, top, left),
        "top-right": region_mean(pixels, top, right),
        "bottom-left": region_mean(pixels, bottom, left),
        "bottom-right": region_mean(pixels, bottom, right),
    }


@pytest.mark.parametrize(
    ("orientation", "upright_size", "red_at", "blue_at"),
    [
        (1, (60, 40), "top-left", "top-right"),
        (3, (60, 40), "bottom-right", "bottom-left"),
        (6, (40, 60), "top-right", "bottom-right"),
        (8, (40, 60), "bottom-left", "top-left"),
    ],
)
@pytest.mark.parametrize(
    "fmt",
    [
        "JPEG",
        "PNG",
        "WEBP",
        "TIFF",  # Pillow's TIFF plugin turns the pixels itself, on load
        pytest.param(
            "AVIF", marks=pytest.mark.skipif(not features.check("avif"), reason="no AVIF")
        ),
    ],
)
def test_exif_orientation(
    fmt: str, orientation: int, upright_size: tuple[int, int], red_at: str, blue_at: str
) -> None:
    data = with_orientation(Image.fromarray(marked()), orientation, fmt)
    image = decode(data)
    assert (image.width, image.height) == upright_size
    assert image.pixels.shape == (upright_size[1], upright_size[0], 3)
    corners = corner_means(image.pixels)
    assert_colour(corners[red_at], RED, LOSSY)
    assert_colour(corners[blue_at], BLUE, LOSSY)
    for name, mean in corners.items():
        if name not in (red_at, blue_at):
            assert_colour(mean, GREY, LOSSY)


UPRIGHT: dict[int, Callable[[npt.NDArray[np.uint8]], npt.NDArray[np.uint8]]] = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1],
    8: lambda a: np.rot90(a, 1),
}


@pytest.mark.parametrize("orientation", sorted(UPRIGHT))
def test_every_orientation_exact_on_png(orientation: int) -> None:
    """Lossless: the decoded pixels are exactly the stored ones, turned per the EXIF spec."""
    arr = np.random.default_rng(orientation).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    data = with_orientation(Image.fromarray(arr), orientation, fmt="PNG")
    image = decode(data)
    expected = UPRIGHT[orientation](arr)
    assert (image.width, image.height) == (expected.shape[1], expected.shape[0])
    np.testing.assert_array_equal(image.pixels, expected)


def exif_bytes(entries: list[tuple[int, int, int, bytes]], extra: bytes = b"") -> bytes:
    """A little-endian EXIF block with one IFD of raw (tag, type, count, value) entries."""
    body = b"II*\x00" + struct.pack("<IH", 8, len(entries))
    for tag, kind, count, value in sorted(entries):
        body += struct.pack("<HHI", tag, kind, count) + value
    return b"Exif\x00\x00" + body + struct.pack("<I", 0) + extra


ORIENT_6 = (0x0112, 3, 1, struct.pack("<HH", 6, 0))


@pytest.mark.parametrize(
    "bad_entry",
    [
        pytest.param((0x010F, 11, 1, struct.pack("<f", 1.5)), id="make-as-float"),
        pytest.param((0x011A, 2, 4, b"abc\x00"), id="xresolution-as-text"),
        pytest.param((0x8769, 9, 1, struct.pack("<i", -5)), id="exif-ifd-negative-offset"),
        pytest.param((0x8825, 9, 1, struct.pack("<i", -5)), id="gps-ifd-negative-offset"),
    ],
)
def test_malformed_exif_still_rotates(bad_entry: tuple[int, int, int, bytes]) -> None:
    """Regression: ImageOps.exif_transpose re-encodes the EXIF and raised on these, failing an
    image whose pixels are fine."""
    data = encode(
        Image.fromarray(marked()), "JPEG", quality=95, exif=exif_bytes([ORIENT_6, bad_entry])
    )
    image = decode(data)
    assert (image.width, image.height) == (40, 60)
    assert image.pixels.shape == (60, 40, 3)
    assert_colour(corner_means(image.pixels)["top-right"], RED, LOSSY)


def test_orientation_of_wrong_type_keeps_size_and_pixels_consistent() -> None:
    """Regression: an orientation stored as RATIONAL 6/1 was ignored for width/height but applied to
    the pixels, so `scale` mapped boxes wrongly."""
    entry = (0x0112, 5, 1, struct.pack("<I", 26))  # value at offset 26, right after the IFD
    data = encode(
        Image.fromarray(marked()), "JPEG", exif=exif_bytes([entry], struct.pack("<II", 6, 1))
    )
    image = decode(data)
    assert image.pixels.shape == (image.height, image.width, 3)
    assert image.scale == (1.0, 1.0)


@pytest.mark.parametrize("orientation", [0, 9, 255])
def test_out_of_range_orientation_is_ignored(orientation: int) -> None:
    data = with_orientation(Image.fromarray(marked()), orientation)
    image = decode(data)
    assert (image.width, image.height) == (60, 40)
    assert_colour(corner_means(image.pixels)["top-left"], RED, LOSSY)


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
@pytest.mark.parametrize(
    "exif",
    [b"Exif\x00\x00not a tiff header at all", b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x05\x00"],
)
def test_unparseable_exif_is_ignored(exif: bytes) -> None:
    image = decode(encode(two_tone(), "JPEG", exif=exif))
    assert (image.width, image.height) == (64, 48)
    assert image.metadata == {}


# ----------------------------------------------------------------------------- colour modes


def test_cmyk_jpeg_colours() -> None:
    cmyk = Image.new("RGB", (32, 32), (255, 0, 0)).convert("CMYK")
    data = encode(cmyk, "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    image = decode(data)
    assert image.pixels.shape == (32, 32, 3)
    assert_colour(image.pixels.reshape(-1, 3).mean(axis=0), (255, 0, 0), 25)


def test_grayscale_16_bit_png_is_rescaled_not_clipped() -> None:
    values = np.array([[65535, 32768, 1000, 0]], dtype=np.uint16)
    data = encode(Image.fromarray(values), "PNG")
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    pixels = decode(data).pixels
    assert pixels.shape == (1, 4, 3)
    assert pixels[0, :, 0].tolist() == [255, 128, 4, 0]
    assert (pixels == pixels[:, :, :1]).all()  # grey: R == G == B


def test_rgb_16_bit_png() -> None:
    row = struct.pack(">3H", 65535, 32768, 0) + struct.pack(">3H", 0, 257, 65535)
    data = raw_png(2, 1, 16, 2, zlib.compress(b"\x00" + row))
    image = decode(data)
    assert image.format == "PNG"
    assert image.pixels.tolist() == [[[255, 128, 0], [0, 1, 255]]]


def test_palette_png() -> None:
    source = two_tone(16, 8)
    data = encode(source.convert("P", palette=Image.Palette.ADAPTIVE, colors=4), "PNG")
    assert Image.open(io.BytesIO(data)).mode == "P"
    np.testing.assert_array_equal(decode(data).pixels, np.asarray(source))


def test_palette_png_with_transparency_is_composited_on_white() -> None:
    image = Image.new("P", (4, 2))
    image.putpalette([*RED, *BLUE])
    image.putdata([0, 1, 0, 1, 1, 1, 0, 0])
    data = encode(image, "PNG", transparency=1)
    pixels = decode(data).pixels
    assert pixels[0].tolist() == [list(RED), list(WHITE), list(RED), list(WHITE)]
    assert pixels[1].tolist() == [list(WHITE), list(WHITE), list(RED), list(RED)]


def test_transparent_gif_is_composited_on_white() -> None:
    image = Image.new("P", (2, 1))
    image.putpalette([*RED, *BLUE])
    image.putdata([0, 1])
    pixels = decode(encode(image, "GIF", transparency=1)).pixels
    assert pixels.tolist() == [[list(RED), list(WHITE)]]


def test_rgba_is_composited_on_white() -> None:
    arr = np.array(
        [[[10, 20, 30, 0], [10, 20, 30, 255], [0, 0, 0, 128], [255, 0, 0, 255]]], dtype=np.uint8
    )
    for fmt in ("PNG", "TIFF"):
        pixels = decode(encode(Image.fromarray(arr, "RGBA"), fmt)).pixels
        assert pixels[0, 0].tolist() == list(WHITE)
        assert pixels[0, 1].tolist() == [10, 20, 30]
        assert_colour(pixels[0, 2], (127, 127, 127), 1)
        assert pixels[0, 3].tolist() == [255, 0, 0]


def test_lossless_webp_with_alpha_is_composited_on_white() -> None:
    arr = np.zeros((4, 4, 4), np.uint8)
    arr[:, :2] = (*BLUE, 255)
    pixels = decode(encode(Image.fromarray(arr, "RGBA"), "WEBP", lossless=True)).pixels
    assert (pixels[:, :2] == BLUE).all()
    assert (pixels[:, 2:] == WHITE).all()


def test_la_mode() -> None:
    arr = np.array([[[0, 0], [0, 255], [200, 255]]], dtype=np.uint8)
    pixels = decode(encode(Image.fromarray(arr, "LA"), "PNG")).pixels
    assert pixels.tolist() == [[[255, 255, 255], [0, 0, 0], [200, 200, 200]]]


def test_bilevel_mode_1() -> None:
    image = Image.new("1", (4, 1))
    image.putdata([0, 255, 0, 255])
    for fmt in ("PNG", "BMP", "TIFF"):
        pixels = decode(encode(image, fmt)).pixels
        assert pixels[0, :, 0].tolist() == [0, 255, 0, 255], fmt
        assert (pixels == pixels[:, :, :1]).all()


def test_grayscale_l() -> None:
    arr = np.array([[0, 77, 255]], dtype=np.uint8)
    pixels = decode(encode(Image.fromarray(arr), "PNG")).pixels
    assert pixels.tolist() == [[[0, 0, 0], [77, 77, 77], [255, 255, 255]]]


def test_float_tiff_in_unit_range() -> None:
    values = np.array([[0.0, 0.25, 0.5, 1.0]], dtype=np.float32)
    data = encode(Image.fromarray(values), "TIFF")
    assert Image.open(io.BytesIO(data)).mode == "F"
    image = decode(data)
    assert image.format == "TIFF"
    assert image.pixels[0, :, 0].tolist() == [0, 64, 128, 255]


def test_float_tiff_in_byte_range_is_clipped() -> None:
    values = np.array([[-5.0, 12.0, 200.0, 300.0]], dtype=np.float32)
    pixels = decode(encode(Image.fromarray(values), "TIFF")).pixels
    assert pixels[0, :, 0].tolist() == [0, 12, 200, 255]


def test_int32_tiff_with_16_bit_values() -> None:
    values = np.array([[0, 65535, 32768]], dtype=np.int32)
    data = encode(Image.fromarray(values), "TIFF")
    assert Image.open(io.BytesIO(data)).mode == "I"
    assert decode(data).pixels[0, :, 0].tolist() == [0, 255, 128]


# ----------------------------------------------------------------------------- errors


def test_empty_bytes() -> None:
    assert error_of(b"").code is ErrorCode.IMAGE_DECODE_FAILED


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"hello, this is a text file\nnot an image\n", id="text"),
        pytest.param(b'{"images": []}', id="json"),
        pytest.param(b"\xff\xd8\xff" + bytes(range(256)) * 8, id="garbage-after-soi"),
        pytest.param(b"\xff\xd8" + np.random.default_rng(1).bytes(4096), id="random-after-soi"),
        pytest.param(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, id="png-signature-only"),
        pytest.param(b"GIF89a", id="gif-signature-only"),
        pytest.param(bytes(1000), id="zeros"),
    ],
)
def test_not_an_image(data: bytes) -> None:
    assert error_of(data).code is ErrorCode.IMAGE_DECODE_FAILED


def test_truncated_real_jpeg() -> None:
    if not COCO_IMAGES.is_dir():
        pytest.skip("evaldata not available")
    data = coco_image()
    for cut in (len(data) // 2, len(data) - 200):
        assert error_of(data[:cut]).code is ErrorCode.IMAGE_DECODE_FAILED
        assert error_of(data[:cut], target_side=100).code is ErrorCode.IMAGE_DECODE_FAILED


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "HEIF"])
def test_truncated_generated_images(fmt: str) -> None:
    noise = np.random.default_rng(7).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    data = encode(Image.fromarray(noise), fmt)
    for fraction in (0.3, 0.5, 0.9):
        cut = data[: int(len(data) * fraction)]
        assert error_of(cut).code is ErrorCode.IMAGE_DECODE_FAILED, (fmt, fraction)


def test_corrupt_png_pixel_stream() -> None:
    data = bytearray(encode(two_tone(), "PNG"))
    zlib_header = data.index(b"IDAT") + 4
    data[zlib_header : zlib_header + 2] = b"\xff\xff"  # zlib: "incorrect header check"
    assert error_of(bytes(data)).code is ErrorCode.IMAGE_DECODE_FAILED


def test_exif_chunk_after_the_pixels_of_a_png() -> None:
    """Pillow only sees an eXIf chunk that follows IDAT once the pixels are decoded."""
    arr = np.random.default_rng(3).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    plain = encode(Image.fromarray(arr), "PNG")
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "LateChunk"
    iend = plain.rindex(b"IEND") - 4
    data = plain[:iend] + png_chunk(b"eXIf", exif.tobytes()) + plain[iend:]
    image = decode(data)
    assert (image.width, image.height) == (5, 7)
    np.testing.assert_array_equal(image.pixels, np.rot90(arr, -1))
    assert image.metadata == {"camera_make": "LateChunk"}


@pytest.fixture
def no_pixel_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail loudly if anything reaches the pixel decoder."""

    def refuse(self: ImageFile.ImageFile) -> None:
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


@pytest.mark.usefixtures("no_pixel_decoding")
@pytest.mark.parametrize(
    ("width", "height", "max_pixels"),
    [
        (100_000, 100_000, 64_000_000),  # Pillow's own bomb check, at open
        (9000, 9000, 64_000_000),  # under Pillow's threshold: our limit
        (20000, 1, 10_000),
    ],
)
def test_png_header_claiming_huge_size(width: int, height: int, max_pixels: int) -> None:
    data = raw_png(width, height, 8, 0, zlib.compress(b"\x00" * 64))
    started = time.perf_counter()
    assert error_of(data, max_pixels=max_pixels).code is ErrorCode.IMAGE_TOO_LARGE
    assert time.perf_counter() - started < 1.0


@pytest.mark.usefixtures("no_pixel_decoding")
def test_real_png_decompression_bomb() -> None:
    """A valid 20000x20000 1-bit PNG (400M pixels) that compresses to ~50 KB."""
    side = 20000
    row = b"\x00" * (1 + side // 8)
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    data = raw_png(side, side, 1, 0, idat)
    assert len(data) < 200_000
    started = time.perf_counter()
    assert error_of(data).code is ErrorCode.IMAGE_TOO_LARGE
    assert error_of(data, max_pixels=10**12).code is ErrorCode.IMAGE_TOO_LARGE  # Pillow's own cap
    assert time.perf_counter() - started < 1.0


def test_max_pixels_limit_is_inclusive() -> None:
    data = encode(Image.new("RGB", (100, 50)), "PNG")
    assert decode(data, max_pixels=5000).pixels.shape == (50, 100, 3)
    err = error_of(data, max_pixels=4999)
    assert err.code is ErrorCode.IMAGE_TOO_LARGE
    assert "100x50" in err.message


def test_max_pixels_checked_before_decoding_jpeg(no_pixel_decoding: None) -> None:
    data = encode(Image.new("RGB", (400, 300)), "JPEG")
    assert error_of(data, max_pixels=1000).code is ErrorCode.IMAGE_TOO_LARGE


SVG_BODY = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect/></svg>'


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(encode(Image.new("RGB", (8, 8)), "PDF"), id="pdf-by-pillow"),
        pytest.param(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n", id="pdf"),
        pytest.param(b"8BPS\x00\x01\x00\x00\x00\x00\x00\x00\x00\x03" + bytes(64), id="psd"),
        pytest.param(SVG_BODY, id="svg"),
        pytest.param(b"  \n" + SVG_BODY, id="svg-leading-space"),
        pytest.param(b'<?xml version="1.0" encoding="UTF-8"?>\n' + SVG_BODY, id="svg-xml-decl"),
        pytest.param(b"\xef\xbb\xbf<?xml version='1.0'?>" + SVG_BODY, id="svg-bom"),
        pytest.param(
            b'<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" "x.dtd">\n' + SVG_BODY,
            id="svg-doctype",
        ),
        pytest.param(b"<!-- Generator: Inkscape -->\n" + SVG_BODY, id="svg-comment"),
        pytest.param(encode(Image.new("RGB", (8, 8)), "EPS"), id="eps-by-pillow"),
        pytest.param(encode(Image.new("RGB", (16, 16)), "ICO"), id="ico-by-pillow"),
        pytest.param(
            encode(Image.new("RGB", (8, 8)), "JPEG2000"),
            id="jpeg2000-by-pillow",
            marks=pytest.mark.skipif(not features.check("jpg_2000"), reason="no openjpeg"),
        ),
        pytest.param(b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n", id="hdr"),
    ],
)
def test_known_unsupported_formats(data: bytes) -> None:
    err = error_of(data)
    assert err.code is ErrorCode.UNSUPPORTED_FORMAT
    assert "JPEG" in err.message  # tells the client what to send instead


@pytest.mark.parametrize("fmt", ["PPM", "TGA", "PCX", "DDS", "QOI"])
def test_formats_pillow_knows_but_we_do_not_open(fmt: str) -> None:
    """Never handed to a plugin outside the allow-list: refused, not decoded."""
    try:
        data = encode(Image.new("RGB", (8, 8), RED), fmt)
    except (KeyError, OSError):
        pytest.skip(f"this Pillow cannot write {fmt}")
    err = error_of(data)
    assert err.code in (ErrorCode.IMAGE_DECODE_FAILED, ErrorCode.UNSUPPORTED_FORMAT)


def test_html_is_not_mistaken_for_svg() -> None:
    err = error_of(b"<!DOCTYPE html>\n<html><body>not an image</body></html>")
    assert err.code is ErrorCode.IMAGE_DECODE_FAILED


# ----------------------------------------------------------------------------- draft mode


@pytest.fixture(scope="module")
def big_jpeg() -> bytes:
    arr = np.full((3000, 4000, 3), GREY, np.uint8)
    arr[:400, :400] = RED  # top-left marker
    return encode(Image.fromarray(arr), "JPEG", quality=90)


def test_draft_decodes_reduced_scale(big_jpeg: bytes) -> None:
    image = decode(big_jpeg, target_side=416)
    height, width = image.pixels.shape[:2]
    assert 416 <= max(width, height) <= 1000
    assert (width, height) == (500, 375)
    assert (image.width, image.height) == (4000, 3000)
    assert describe(image)["width"] == 4000
    scale_x, scale_y = image.scale
    assert scale_x == pytest.approx(4000 / width)
    assert scale_y == pytest.approx(3000 / height)
    assert_colour(region_mean(image.pixels, slice(5, 40), slice(5, 40)), RED, LOSSY)
    assert_colour(region_mean(image.pixels, slice(100, 300), slice(100, 400)), GREY, LOSSY)


def test_no_target_side_decodes_full_size(big_jpeg: bytes) -> None:
    image = decode(big_jpeg, target_side=None)
    assert image.pixels.shape == (3000, 4000, 3)
    assert image.scale == (1.0, 1.0)


def test_draft_with_orientation_6() -> None:
    arr = np.full((3000, 4000, 3), GREY, np.uint8)
    arr[:400, :400] = RED
    data = with_orientation(Image.fromarray(arr), 6)
    image = decode(data, target_side=416)
    assert (image.width, image.height) == (3000, 4000)
    height, width = image.pixels.shape[:2]
    assert (width, height) == (375, 500)
    assert image.scale == pytest.approx((8.0, 8.0))
    # stored top-left lands top-right once upright
    assert_colour(region_mean(image.pixels, slice(5, 40), slice(-40, -5)), RED, LOSSY)
    assert_colour(region_mean(image.pixels, slice(5, 40), slice(5, 40)), GREY, LOSSY)


@pytest.mark.parametrize(
    ("width", "height", "target"),
    [
        (1001, 37, 100),
        (37, 1001, 100),
        (999, 999, 124),
        (640, 480, 80),
        (641, 481, 640),
        (300, 200, 299),
    ],
)
def test_draft_never_goes_below_target(width: int, height: int, target: int) -> None:
    data = encode(Image.new("RGB", (width, height), BLUE), "JPEG")
    image = decode(data, target_side=target)
    assert (image.width, image.height) == (width, height)
    assert max(image.pixels.shape[:2]) >= target
    assert image.scale[0] == pytest.approx(width / image.pixels.shape[1])


def test_no_draft_when_already_small() -> None:
    data = encode(Image.new("RGB", (400, 300), BLUE), "JPEG")
    assert decode(data, target_side=416).pixels.shape == (300, 400, 3)
    assert decode(data, target_side=400).pixels.shape == (300, 400, 3)


def test_other_formats_are_reduced_by_a_whole_factor_that_keeps_the_target_side() -> None:
    data = encode(Image.new("RGB", (2000, 1000), BLUE), "PNG")
    image = decode(data, target_side=416)
    assert image.pixels.shape == (250, 500, 3)  # 2000 // 416 = 4; 500 px is still >= 416
    assert (image.width, image.height) == (2000, 1000)
    assert image.scale == (4.0, 4.0)
    assert_colour(image.pixels.reshape(-1, 3).mean(axis=0), BLUE, 2)


def test_a_reduced_image_keeps_the_orientation_of_its_original() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    buffer = io.BytesIO()
    Image.new("RGB", (2000, 1000), BLUE).save(buffer, "PNG", exif=exif)
    image = decode(buffer.getvalue(), target_side=416)
    assert (image.width, image.height) == (1000, 2000)
    assert image.pixels.shape == (500, 250, 3)


def test_decoding_cost_is_read_from_the_header_and_follows_the_jpeg_draft() -> None:
    png = encode(Image.new("RGB", (2000, 1000), BLUE), "PNG")
    assert decoding_cost(png, max_pixels=10**8) == 2000 * 1000 * DECODING_BYTES_PER_PIXEL
    jpeg = encode(Image.new("RGB", (2000, 1000), BLUE), "JPEG")
    drafted = decoding_cost(jpeg, max_pixels=10**8, target_side=416)
    assert drafted == 500 * 250 * DECODING_BYTES_PER_PIXEL
    with pytest.raises(BatchVisionError) as caught:
        decoding_cost(png, max_pixels=1000)
    assert caught.value.code is ErrorCode.IMAGE_TOO_LARGE


def test_draft_of_cmyk_jpeg() -> None:
    data = encode(Image.new("RGB", (1600, 1200), (255, 0, 0)).convert("CMYK"), "JPEG")
    image = decode(data, target_side=200)
    assert (image.width, image.height) == (1600, 1200)
    assert image.pixels.shape == (150, 200, 3)
    assert_colour(image.pixels.reshape(-1, 3).mean(axis=0), (255, 0, 0), 25)


def test_no_real_jpeg_comes_near_the_data_per_pixel_floor() -> None:
    """The rule that refuses forged JPEG sizes, measured on every JPEG of the eval data."""
    ratios = []
    for path in sorted(p for p in EVALDATA.rglob("*") if p.is_file()):
        try:
            with Image.open(path) as image:
                if image.format not in ("JPEG", "MPO"):
                    continue
                width, height = image.size
        except (OSError, ValueError):
            continue
        ratios.append(path.stat().st_size / (width * height))
    assert len(ratios) >= 150
    assert min(ratios) > 30 * MIN_JPEG_BYTES_PER_PIXEL  # measured: 0.039 bytes/pixel, 39x


def test_a_flat_jpeg_at_the_encoder_floor_still_decodes() -> None:
    # Pillow's smallest output for an 8000x7999 image (flat gray, optimized Huffman tables) is
    # 1/256 byte per pixel, 4x the rule; decoded with a draft so the test stays light.
    data = encode(Image.new("L", (8000, 7999), 128), "JPEG", optimize=True)
    assert len(data) < 8000 * 7999 / 200
    image = decode_image(data, max_pixels=64_000_000, target_side=500)
    assert (image.width, image.height) == (8000, 7999)
