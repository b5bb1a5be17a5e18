"""Bytes to upright RGB pixels plus metadata, refusing what is not a safe, supported image.

The format is what a decoder recognises, never a 4-byte signature alone: the allowed openers are
asked first, and only bytes none of them takes are named for the refusal, by the header parsers of
the refused formats Pillow knows (a TGA file starts with CUR's 4 bytes, ``00 00 02 00``, and was
refused as CUR), then by signature for formats Pillow cannot open (PDF, PostScript, SVG, ...).

A JPEG whose entropy-coded data is far smaller than its dimensions need is refused before its
pixels are allocated: libjpeg fills a truncated scan with gray, so 6 KB claiming 8000x7999 would
otherwise decode as a 64 MP gray image. See `MIN_JPEG_BYTES_PER_PIXEL` for the measured margin.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import replace
from typing import Any

import numpy as np
import pillow_heif
from PIL import Image, PngImagePlugin, UnidentifiedImageError

from batchvision.core.errors import BatchVisionError, ErrorCode
from batchvision.core.types import DecodedImage, RGBArray
from batchvision.intake.exif import extract_metadata
from batchvision.intake.provenance import read_provenance

pillow_heif.register_heif_opener()

# Only these Pillow plugins are ever asked to parse client bytes; the rest (EPS runs Ghostscript,
# and many are rarely fuzzed) are never reached.
ALLOWED_FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF", "HEIF", "AVIF")

# What is passed to Image.open: the allowed formats this Pillow build can open. Naming one it has no
# opener for makes Image.open raise KeyError for every file its earlier entries did not accept
# (MPO files are opened by the JPEG opener and have none of their own; AVIF needs Pillow >= 11.2).
Image.init()
_OPENERS = tuple(name for name in ALLOWED_FORMATS if name in Image.OPEN)

# File name extensions of what decodes here (.heic, .avif, .bmp, .gif, .jfif, ...), from Pillow's
# own table, so a folder scan takes exactly the files this build can open.
IMAGE_SUFFIXES = frozenset(ext for ext, name in Image.EXTENSION.items() if name in ALLOWED_FORMATS)

# Refused formats Pillow recognises: only their header parsers run (no pixels are ever loaded),
# and only on bytes no allowed opener took, to name what was sent. TGA has no signature, so it is
# asked last, after the formats that do.
_NAMED_BY_PARSER: dict[str, str] = {
    "PSD": "PSD",
    "ICO": "ICO",
    "CUR": "CUR",
    "JPEG2000": "JPEG 2000",
    "DDS": "DDS",
    "ICNS": "ICNS",
    "TGA": "TGA",
}
_PARSERS = tuple(name for name in _NAMED_BY_PARSER if name in Image.OPEN)

# Then by magic bytes long or rare enough not to collide: formats Pillow has no parser for (or
# one that must not run: EPS), and files whose header a parser refuses but whose magic says what
# they meant to be. Not ICO's and CUR's `00 00 0x 00`, which a TGA header can start with.
_REFUSED_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"%PDF", "PDF"),
    (b"%!PS", "PostScript"),
    (b"\xc5\xd0\xd3\xc6", "EPS"),
    (b"8BPS", "PSD"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
    (b"<svg", "SVG"),
    (b"DDS ", "DDS"),
    (b"icns", "ICNS"),
    (b"\x76\x2f\x31\x01", "OpenEXR"),
    (b"#?RADIANCE", "HDR"),
)

# A complete Huffman-coded JPEG spends at least one bit per 8x8 block on the DC coefficient: 1/512
# of a byte per pixel (a flat gray 8000x7999 saved by Pillow with optimize=True is 1/256). Refused
# below half that floor, 1/1024. Measured on the 174 JPEGs of the eval data (photos, camera traps,
# scans, OCR lines, an all-black frame), the smallest is 0.039 bytes per pixel (a 3168x3168 photo
# of 387,000 bytes): 39x above the rule; the forged 6 KB 8000x7999 file is 0.0001. An
# arithmetic-coded JPEG (rare; libjpeg decodes them) of a flat image could fall below it.
MIN_JPEG_BYTES_PER_PIXEL = 1 / 1024

# Pillow refuses a PNG text (zTXt, iTXt) or ICC profile (iCCP) chunk that inflates past
# PngImagePlugin.MAX_TEXT_CHUNK (1 MiB), or text chunks past MAX_TEXT_MEMORY, with these words.
_PNG_CHUNK_LIMITS = ("MAX_TEXT_CHUNK", "text chunks")

_WHITE = (255, 255, 255)


# What decoding costs in memory per pixel of the (drafted) image, before the result shrinks to
# its 3 bytes per pixel: Pillow's 4-byte RGBX buffer, plus the array or converted copy made from it.
DECODING_BYTES_PER_PIXEL = 8


def decoding_cost(data: bytes, *, max_pixels: int, target_side: int | None = None) -> int:
    """Bytes decoding `data` will allocate at its peak, from the header alone: what a memory
    budget admits before a pixel is decoded. Raises what `decode_image` would for a bad header."""
    width, height = _opened(data, max_pixels, target_side)[0].size  # the drafted size
    return width * height * DECODING_BYTES_PER_PIXEL


def decode_image(
    data: bytes, *, max_pixels: int, target_side: int | None = None, provenance: bool = False
) -> DecodedImage:
    """Decode `data`. With `target_side` the pixels kept are reduced (a JPEG is decoded at a
    reduced DCT scale, other formats are box-reduced right after loading) to an integer
    fraction whose longer side is still at least `target_side`: the model never sees more
    pixels than that, and a 64 MP PNG is not held at full size for a 640 px detector.
    With `provenance` the bytes' provenance evidence is read too (`intake.provenance`), here
    where the original bytes still are."""
    image, full_size = _opened(data, max_pixels, target_side)
    # Pixels before any EXIF read. PNG's getexif() decodes the pixels itself when no eXIf chunk
    # precedes them, the EXIF readers swallow its errors, and a second load() then returns the
    # blank, half-filled image without raising (a corrupt PNG decoded as black). And Pillow's TIFF
    # plugin reports the upright size from the start and drops the orientation tag as it loads,
    # so the orientation must be read after loading or the size is swapped twice.
    pixels = _load_rgb(image, target_side)
    metadata = extract_metadata(image)
    upright_w, upright_h = _upright_size(full_size, image)
    return DecodedImage(
        pixels=pixels,
        width=upright_w,
        height=upright_h,
        format=_format_name(image.format),
        file_size=len(data),
        metadata=metadata,
        provenance=read_provenance(data, image) if provenance else None,
    )


def _opened(
    data: bytes, max_pixels: int, target_side: int | None
) -> tuple[Image.Image, tuple[int, int]]:
    """The image with its header read and checked (draft requested), and its full size."""
    if not data:
        raise BatchVisionError(ErrorCode.IMAGE_DECODE_FAILED, "image is empty (0 bytes)")
    image = _open(data)
    _check_pixels(image, max_pixels)
    _check_jpeg_data(image, len(data))
    full_size = image.size
    if target_side is not None and image.format in ("JPEG", "MPO"):
        _request_draft(image, target_side)
    return image, full_size


def _refuse_known_unsupported(data: bytes) -> None:
    if _PARSERS:
        try:
            named = Image.open(io.BytesIO(data), formats=_PARSERS)
        except Exception:  # no parser takes it, however it fails
            named = None
        if named is not None:
            raise _unsupported(_NAMED_BY_PARSER.get(named.format or "", "this format"))
    head = data[:16].lstrip() if data[:1].isspace() else data[:16]
    for signature, name in _REFUSED_SIGNATURES:
        if head.startswith(signature):
            raise _unsupported(name)
    if _looks_like_svg(data):
        raise _unsupported("SVG")


def _unsupported(name: str) -> BatchVisionError:
    return BatchVisionError(
        ErrorCode.UNSUPPORTED_FORMAT,
        f"{name} is not a supported image format; send {_supported_list()}",
    )


def _looks_like_svg(data: bytes) -> bool:
    """Most SVG files open with a BOM, an XML declaration, a comment or a DOCTYPE, not `<svg`."""
    head = data[:1024].removeprefix(b"\xef\xbb\xbf").lstrip()
    return head.startswith(b"<") and b"<svg" in head


def _supported_list() -> str:
    return "JPEG, PNG, WebP, GIF, BMP, TIFF, HEIC/HEIF or AVIF"


def _open(data: bytes) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data), formats=_OPENERS)
    except Image.DecompressionBombError as exc:
        raise BatchVisionError(ErrorCode.IMAGE_TOO_LARGE, "image has too many pixels") from exc
    except UnidentifiedImageError as exc:
        _refuse_known_unsupported(data)
        raise BatchVisionError(
            ErrorCode.IMAGE_DECODE_FAILED,
            f"data is not a recognised image; send {_supported_list()}",
        ) from exc
    except Exception as exc:  # malformed headers surface as many exception types
        raise _png_chunk_too_large(exc) or BatchVisionError(
            ErrorCode.IMAGE_DECODE_FAILED, "image header is corrupt"
        ) from exc


def _png_chunk_too_large(exc: Exception) -> BatchVisionError | None:
    if not isinstance(exc, ValueError) or not any(w in str(exc) for w in _PNG_CHUNK_LIMITS):
        return None
    limit = PngImagePlugin.MAX_TEXT_CHUNK
    return BatchVisionError(
        ErrorCode.IMAGE_DECODE_FAILED,
        f"PNG text or ICC profile chunk is larger than the {limit} bytes read; strip the "
        "metadata (text chunks, ICC profile) or re-save the image",
    )


def _check_jpeg_data(image: Image.Image, size: int) -> None:
    width, height = image.size
    if image.format not in ("JPEG", "MPO") or size >= width * height * MIN_JPEG_BYTES_PER_PIXEL:
        return
    raise BatchVisionError(
        ErrorCode.IMAGE_DECODE_FAILED,
        f"JPEG data is truncated: {size} bytes cannot hold a {width}x{height} image (at least "
        f"{math.ceil(width * height * MIN_JPEG_BYTES_PER_PIXEL)})",
    )


def _check_pixels(image: Image.Image, max_pixels: int) -> None:
    width, height = image.size
    if width <= 0 or height <= 0:
        raise BatchVisionError(ErrorCode.IMAGE_DECODE_FAILED, "image has no pixels")
    if width * height > max_pixels:
        raise BatchVisionError(
            ErrorCode.IMAGE_TOO_LARGE,
            f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}",
        )


def _orientation(image: Image.Image) -> int:
    try:
        value = image.getexif().get(0x0112, 1)
        return int(value) if isinstance(value, int) else 1
    except Exception:
        return 1


# Orientation tag value to the transposition that makes the pixels upright.
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _upright(image: Image.Image, pixels: Image.Image) -> Image.Image:
    """Apply to `pixels` (`image` itself or a reduced copy, which has no EXIF of its own) the
    orientation `_upright_size` assumed from `image`. Not ImageOps.exif_transpose: it re-encodes
    the EXIF it strips the tag from, which raises on malformed EXIF, and it reads the tag with
    different rules (it honours a RATIONAL 6, `_orientation` does not), so sizes could disagree."""
    method = _TRANSPOSE.get(_orientation(image))
    return pixels if method is None else pixels.transpose(method)


def _upright_size(size: tuple[int, int], image: Image.Image) -> tuple[int, int]:
    """`size` (taken before any draft) as it is once `image`'s orientation is applied."""
    width, height = size
    return (height, width) if _orientation(image) in (5, 6, 7, 8) else (width, height)


def _request_draft(image: Image.Image, target_side: int) -> None:
    width, height = image.size
    longest = max(width, height)
    if longest <= target_side:
        return
    # Ask for the size the model will resize to; JPEG's DCT scaling picks a power-of-two
    # reduction that still yields at least this many pixels on each side.
    wanted = (max(1, width * target_side // longest), max(1, height * target_side // longest))
    image.draft(None, wanted)


# Rows are reduced this many pixels at a time by `reduced_copy`: Pillow copies an RGB array into
# its own 4-byte pixels, which for a whole 64 MP image would be another 256 MB.
_REDUCE_BAND_PIXELS = 4 * 1024 * 1024


def reduced_copy(image: DecodedImage, target_side: int) -> DecodedImage:
    """`image` box-reduced as decoding would have for `target_side` (the same whole factor),
    for the skills of a request that need fewer pixels than its full-resolution ones; `image`
    itself when no reduction applies."""
    height, width = image.pixels.shape[:2]
    factor = max(width, height) // target_side
    if factor < 2:
        return image
    out = np.empty((-(-height // factor), -(-width // factor), 3), np.uint8)
    band = max(1, _REDUCE_BAND_PIXELS // (width * factor)) * factor
    for top in range(0, height, band):
        rows = Image.fromarray(np.ascontiguousarray(image.pixels[top : top + band]))
        out[top // factor : top // factor + -(-rows.height // factor)] = np.asarray(
            rows.reduce(factor)
        )
    return replace(image, pixels=out)


def _reduced(image: Image.Image, target_side: int | None) -> Image.Image:
    factor = max(image.size) // target_side if target_side else 1
    if factor < 2:
        return image
    try:
        return image.reduce(factor)
    except ValueError:  # modes reduce() does not take (P, 1) are converted at full size
        return image


def _load_rgb(image: Image.Image, target_side: int | None) -> RGBArray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image.load()
            return _to_rgb_array(_upright(image, _reduced(image, target_side)))
    except BatchVisionError:
        raise
    except Exception as exc:  # truncated or corrupt data: OSError, SyntaxError, ValueError...
        raise _png_chunk_too_large(exc) or BatchVisionError(
            ErrorCode.IMAGE_DECODE_FAILED, f"image data is corrupt or truncated ({_reason(exc)})"
        ) from exc


def _reason(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:120]


def _to_rgb_array(image: Image.Image) -> RGBArray:
    mode = image.mode
    if mode.startswith("I") or mode == "F":
        return _high_depth_to_rgb(image)
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_WHITE, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    if mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image)


def _high_depth_to_rgb(image: Image.Image) -> RGBArray:
    """16-bit and float images: rescale to 8 bits instead of clipping at 255."""
    values = np.asarray(image).astype(np.float32)
    if image.mode.startswith("I;16") or (image.mode.startswith("I") and values.max() > 255):
        values = values / 257.0
    elif image.mode == "F" and values.max() <= 1.0:
        values = values * 255.0
    gray = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2) if gray.ndim == 2 else gray[:, :, :3]


def _format_name(pil_format: str | None) -> str:
    names = {"MPO": "JPEG"}
    fmt = pil_format or "UNKNOWN"
    return names.get(fmt, fmt)


def describe(image: DecodedImage) -> dict[str, Any]:
    """The image facts every result carries."""
    return {
        "width": image.width,
        "height": image.height,
        "format": image.format,
        "file_size": image.file_size,
    }
