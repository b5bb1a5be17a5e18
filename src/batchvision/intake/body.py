"""Request bodies to ImageInputs, with every limit enforced while the bytes arrive.

Request-level limits (whole body, image count) stop reading at once and raise; a per-image limit
marks that image as failed, discards the rest of its bytes, and reading goes on, so one oversized
photo never fails its batch.

Multipart video parts (`video_fields`) go to temporary files under `BodyLimits.video_dir` as
their bytes arrive, never into memory. Their bytes count against `max_video_bytes` each, not
against `max_request_bytes` (which bounds the rest of the body), and a video past its limit
stops reading at once: 413 `video_too_large` (reading on to discard up to 500 MB of a video
would cost more than the one video is worth). The files of a body that fails are deleted here;
those of a body read whole belong to the caller (`FormData.videos`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from batchvision.core.errors import BatchVisionError, ErrorCode, echo
from batchvision.core.settings import Settings
from batchvision.core.types import ImageInput, ItemError, VideoInput
from batchvision.intake.video import (
    open_spool_file,
    remove_spooled,
    spool_directory,
    video_too_large,
)

_INLINE_JSON_BYTES = 256 * 1024


@dataclass(frozen=True)
class BodyLimits:
    max_request_bytes: int
    max_image_bytes: int
    max_images: int
    max_field_bytes: int
    max_video_bytes: int = 0
    max_videos: int = 0  # 0: a body with videos is refused
    video_dir: Path | None = None  # where video parts are spooled

    @classmethod
    def from_settings(cls, settings: Settings, *, videos: bool = False) -> BodyLimits:
        """The server's limits; `videos`: for a body that may carry videos, whose bytes
        come on top of `max_request_bytes` (`max_body_bytes`)."""
        limits = cls(
            max_request_bytes=settings.max_request_bytes,
            max_image_bytes=settings.max_image_bytes,
            max_images=settings.max_images_per_request,
            max_field_bytes=settings.max_json_field_bytes,
        )
        if not videos:
            return limits
        return replace(
            limits,
            max_video_bytes=settings.video_max_bytes,
            max_videos=settings.max_videos_per_request,
            video_dir=spool_directory(settings),
        )

    @property
    def max_body_bytes(self) -> int:
        """The largest body these limits can accept: the rest of it, plus its videos."""
        return self.max_request_bytes + self.max_videos * self.max_video_bytes


def too_many_videos(limit: int) -> BatchVisionError:
    return BatchVisionError(
        ErrorCode.TOO_MANY_IMAGES, f"too many videos in one request; the limit is {limit}"
    )


def too_many_images(limit: int) -> BatchVisionError:
    return BatchVisionError(
        ErrorCode.TOO_MANY_IMAGES, f"too many images in one request; the limit is {limit}"
    )


def _payload_too_large(limit: int) -> BatchVisionError:
    return BatchVisionError(
        ErrorCode.PAYLOAD_TOO_LARGE, f"request body exceeds the limit of {limit} bytes"
    )


def image_too_large(limit: int) -> ItemError:
    return ItemError(ErrorCode.IMAGE_TOO_LARGE, f"image exceeds the limit of {limit} bytes")


def check_content_length(headers: Mapping[str, str], limits: BodyLimits) -> None:
    """Refuse a declared oversize body before reading a byte of it."""
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limits.max_body_bytes:
        raise _payload_too_large(limits.max_body_bytes)


async def read_capped(stream: AsyncIterator[bytes], limit: int) -> bytes:
    body = bytearray()
    async for chunk in stream:
        body.extend(chunk)
        if len(body) > limit:
            raise _payload_too_large(limit)
    return bytes(body)


def refuse_unpaired_surrogates(body: Any) -> None:
    """JSON can escape a lone UTF-16 surrogate (`"\\ud800"`); Python keeps it in the string, and
    any response that echoes it (an id, a filename, a skill name in an error) then fails to
    encode as UTF-8. Such text is not Unicode, so the request is refused up front."""
    stack = [body]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            if not value.isascii():
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:
                    raise BatchVisionError(
                        ErrorCode.INVALID_REQUEST,
                        "request body contains an unpaired surrogate escape",
                    ) from None
        elif isinstance(value, dict):
            stack.extend(value)
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)


def parse_json(body: bytes) -> Any:
    """A JSON request body, refused with invalid_request when it is not JSON or not Unicode."""
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        raise BatchVisionError(
            ErrorCode.INVALID_REQUEST, "request body is not valid JSON"
        ) from None
    refuse_unpaired_surrogates(parsed)
    return parsed


async def read_json(stream: AsyncIterator[bytes], limits: BodyLimits) -> Any:
    body = await read_capped(stream, limits.max_request_bytes)
    if len(body) < _INLINE_JSON_BYTES:
        return parse_json(body)
    # Parsing tens of megabytes of base64 takes long enough to stall every other request.
    return await asyncio.to_thread(parse_json, body)


def image_from_base64(
    index: int, text: str, limits: BodyLimits, *, client_id: str | None = None
) -> ImageInput:
    """A base64 string, bare or as a `data:` URI, to an ImageInput (or one with an error)."""
    item = ImageInput(index=index, client_id=client_id)
    payload = text
    if payload.startswith("data:"):
        header, sep, payload = payload.partition(",")
        if not sep or not header.endswith(";base64"):
            item.error = ItemError(ErrorCode.INVALID_REQUEST, "data URI must be base64-encoded")
            return item
    payload = "".join(payload.split())
    # The decoded size: 3 bytes per 4 characters, less what the padding stands for.
    if len(payload.rstrip("=")) * 3 // 4 > limits.max_image_bytes:
        item.error = image_too_large(limits.max_image_bytes)
        return item
    try:
        item.data = _b64decode(payload)
    except (binascii.Error, ValueError):
        item.error = ItemError(ErrorCode.INVALID_REQUEST, "image data is not valid base64")
    return item


def video_from_base64(text: str, max_bytes: int) -> bytes:
    """A video sent as base64 (bare or a `data:` URI), under the same rules as an image's;
    more than `max_bytes` decoded is `video_too_large`, bad base64 `invalid_request`."""
    decoded = image_from_base64(0, text, replace(_NO_LIMITS, max_image_bytes=max_bytes))
    if decoded.error is not None and decoded.error.code == ErrorCode.IMAGE_TOO_LARGE:
        raise video_too_large(f"over {max_bytes} bytes")
    if decoded.error is not None:
        message = decoded.error.message.replace("image data", "video data")
        raise BatchVisionError(decoded.error.code, message)
    assert decoded.data is not None
    return decoded.data


_NO_LIMITS = BodyLimits(max_request_bytes=0, max_image_bytes=0, max_images=0, max_field_bytes=0)


def _b64decode(payload: str) -> bytes:
    padded = payload + "=" * (-len(payload) % 4)
    if "-" in padded or "_" in padded:
        # urlsafe_b64decode cannot validate: it would silently drop invalid characters.
        padded = padded.translate(_URLSAFE_TO_STANDARD)
    return base64.b64decode(padded, validate=True)


_URLSAFE_TO_STANDARD = str.maketrans("-_", "+/")


@dataclass
class FormData:
    images: list[ImageInput] = field(default_factory=list)
    videos: list[VideoInput] = field(default_factory=list)  # spooled: the caller deletes them
    fields: dict[str, list[str]] = field(default_factory=dict)

    def field(self, name: str) -> str | None:
        values = self.fields.get(name)
        return values[-1] if values else None


@dataclass
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    name: str = ""
    filename: str | None = None
    is_image: bool = False
    is_video: bool = False
    data: bytearray = field(default_factory=bytearray)
    error: ItemError | None = None
    file: BinaryIO | None = None  # a video part's spool file, open while its bytes arrive
    path: Path | None = None
    size: int = 0


class _MultipartReader:
    """Callbacks for python-multipart's streaming parser, applying the limits as data flows."""

    def __init__(
        self, limits: BodyLimits, image_fields: frozenset[str], video_fields: frozenset[str]
    ) -> None:
        self.limits = limits
        self.image_fields = image_fields
        self.video_fields = video_fields
        self.form = FormData()
        self.part = _Part()
        self.header_field = bytearray()
        self.header_value = bytearray()
        self.finished = False
        self.video_bytes = 0  # bytes of video parts so far, outside max_request_bytes

    def discard_videos(self) -> None:
        """Delete every video file this body spooled (its reading failed)."""
        if self.part.file is not None:
            self.part.file.close()
        remove_spooled([self.part.path, *(video.path for video in self.form.videos)])

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": lambda d, s, e: self.header_field.extend(d[s:e]),
            "on_header_value": lambda d, s, e: self.header_value.extend(d[s:e]),
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_end": self.on_end,
        }

    def on_part_begin(self) -> None:
        self.part = _Part()

    def on_header_end(self) -> None:
        self.part.headers[bytes(self.header_field).lower()] = bytes(self.header_value)
        self.header_field.clear()
        self.header_value.clear()

    def on_headers_finished(self) -> None:
        disposition = self.part.headers.get(b"content-disposition", b"")
        _, options = parse_options_header(disposition)
        self.part.name = options.get(b"name", b"").decode("utf-8", "replace")
        raw_filename = options.get(b"filename")
        self.part.filename = raw_filename.decode("utf-8", "replace") if raw_filename else None
        self.part.is_image = self.part.name in self.image_fields
        self.part.is_video = self.part.name in self.video_fields
        if self.part.is_image and len(self.form.images) >= self.limits.max_images:
            raise too_many_images(self.limits.max_images)
        if self.part.is_video:
            self._open_video()
        elif not self.part.is_image and self.part.filename is not None:
            expected = " or ".join(sorted(self.image_fields | self.video_fields))
            raise BatchVisionError(
                ErrorCode.INVALID_REQUEST,
                f"unexpected file field '{echo(self.part.name)}'; send images as '{expected}'",
            )

    def _open_video(self) -> None:
        if len(self.form.videos) >= self.limits.max_videos or self.limits.video_dir is None:
            raise too_many_videos(self.limits.max_videos)
        self.part.file, self.part.path = open_spool_file(self.limits.video_dir)

    def _video_data(self, data: bytes) -> None:
        part = self.part
        part.size += len(data)
        self.video_bytes += len(data)
        if part.size > self.limits.max_video_bytes:
            raise video_too_large(f"over {self.limits.max_video_bytes} bytes")
        assert part.file is not None
        # A blocking write, but to the page cache: measured well under a millisecond per
        # 64 KiB chunk, far less than the parsing around it.
        part.file.write(data)

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self.part
        if part.is_video:
            self._video_data(data[start:end])
            return
        if part.error is not None:
            return
        part.data.extend(data[start:end])
        if part.is_image and len(part.data) > self.limits.max_image_bytes:
            part.error = image_too_large(self.limits.max_image_bytes)
            part.data = bytearray()
        elif not part.is_image and len(part.data) > self.limits.max_field_bytes:
            raise BatchVisionError(
                ErrorCode.PAYLOAD_TOO_LARGE,
                f"form field '{echo(part.name)}' exceeds {self.limits.max_field_bytes} bytes",
            )

    def on_part_end(self) -> None:
        part = self.part
        if part.is_video:
            assert part.file is not None
            part.file.close()
            index = len(self.form.videos)
            self.form.videos.append(VideoInput(index, filename=part.filename, path=part.path))
            self.part = _Part()  # the file is the form's now
        elif part.is_image:
            self.form.images.append(
                ImageInput(
                    index=len(self.form.images),
                    filename=part.filename,
                    data=None if part.error else bytes(part.data),
                    error=part.error,
                )
            )
        else:
            text = part.data.decode("utf-8", "replace")
            self.form.fields.setdefault(part.name, []).append(text)

    def on_end(self) -> None:
        self.finished = True


async def read_multipart(
    stream: AsyncIterator[bytes],
    content_type: str,
    limits: BodyLimits,
    image_fields: frozenset[str] = frozenset({"images"}),
    video_fields: frozenset[str] = frozenset(),
) -> FormData:
    """The form, its images in memory and its videos (`video_fields`) spooled to files."""
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise BatchVisionError(ErrorCode.INVALID_REQUEST, "multipart body has no boundary")
    reader = _MultipartReader(limits, image_fields, video_fields)
    try:
        await _parse_multipart(stream, boundary, reader)
    except BaseException:
        reader.discard_videos()
        raise
    return reader.form


async def _parse_multipart(
    stream: AsyncIterator[bytes], boundary: bytes, reader: _MultipartReader
) -> None:
    limit = reader.limits.max_request_bytes
    received = 0
    try:  # FormParserError: also what the parser raises for a boundary over 256 bytes
        parser = MultipartParser(boundary, reader.callbacks())  # type: ignore[arg-type]
        async for chunk in stream:
            received += len(chunk)
            parser.write(chunk)
            # Checked once the chunk is parsed: the video bytes in it have their own limit.
            if received - reader.video_bytes > limit:
                raise _payload_too_large(limit)
        parser.finalize()
    except FormParserError:
        raise BatchVisionError(ErrorCode.INVALID_REQUEST, "malformed multipart body") from None
    if not reader.finished:
        raise BatchVisionError(ErrorCode.INVALID_REQUEST, "multipart body ended early")
