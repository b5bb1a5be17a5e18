"""Video intake: a video spooled to a temporary file while its bytes arrive, then sampled into
frames with PyAV (which bundles FFmpeg), one frame at a time.

- `spool(chunks, directory, max_bytes)` writes an upload to a temporary file, refusing it the
  moment it passes `max_bytes` (`video_too_large`); a video is never whole in memory.
- `probe(path, limits)` opens it and reads its stream (`VideoInfo`), refusing what the limits
  forbid (duration, resolution) before any frame is decoded.
- `sample_frames(path, sampling, limits, target_side)` yields `SampledFrame`s: the frames
  nearest each sampling instant `start_time, start_time + 1/fps, …` up to `end_time` and
  `max_frames`, each at most `target_side` pixels on its longest side (scaled by FFmpeg's
  swscale as it converts to RGB: full-size frames are never materialised for a skill that
  reads 640 px). Decoding starts at the keyframe before `start_time` (a seek), not at the
  beginning. Every decoded frame counts against `limits.max_frames_decoded`, sampled or not.

A file that is not a video (or not in MP4, MOV, AVI, MKV or WebM), a truncated or corrupt one, or
one with no video stream is `video_decode_failed`. A stream whose frames end more than a second
before its declared duration counts as truncated: the error comes after the frames that were
read (the caller fails the whole item). Rotation metadata (phones' display matrix) is not
applied: frames come as stored.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import time
from collections.abc import AsyncIterator, Generator, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO, cast

import av
import av.container
import av.error
import av.video.stream

from batchvision.core.errors import BatchVisionError, ErrorCode
from batchvision.core.settings import Settings
from batchvision.core.types import DecodedImage, RGBArray

VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v"})
MB = 1024 * 1024


@dataclass(frozen=True)
class VideoLimits:
    max_bytes: int = 500 * MB
    max_duration_s: float = 3600.0
    max_pixels: int = 7680 * 4320  # one frame's width x height (8K UHD)
    max_frames_decoded: int = 200_000

    @classmethod
    def from_settings(cls, settings: Settings) -> VideoLimits:
        return cls(
            max_bytes=settings.video_max_bytes,
            max_duration_s=settings.video_max_duration_s,
            max_pixels=settings.video_max_pixels,
            max_frames_decoded=settings.video_max_frames_decoded,
        )


def spool_directory(settings: Settings) -> Path:
    """Where videos are spooled while a request uses them."""
    return settings.data_dir / "tmp" / "videos"


@dataclass(frozen=True)
class FrameSampling:
    """Which frames to analyse: `fps` per second of video (None: every frame), between
    `start_time` and `end_time` seconds (None: the end), at most `max_frames` of them."""

    fps: float | None = 1.0
    start_time: float = 0.0
    end_time: float | None = None
    max_frames: int = 300

    def __post_init__(self) -> None:
        if self.fps is not None and not 0 < self.fps <= 240:
            raise _invalid("fps must be greater than 0 and at most 240")
        if not math.isfinite(self.start_time) or self.start_time < 0:
            raise _invalid("start_time must be a number of seconds, 0 or more")
        if self.end_time is not None and not self.end_time > self.start_time:
            raise _invalid("end_time must be after start_time")
        if not 1 <= self.max_frames <= 100_000:
            raise _invalid("max_frames must be from 1 to 100000")


@dataclass(frozen=True)
class VideoInfo:
    container: str  # FFmpeg's demuxer name, e.g. "mov,mp4,m4a,3gp,3g2,mj2"
    codec: str
    width: int
    height: int
    fps: float | None  # the stream's average rate, when it declares one
    duration_s: float | None
    file_size: int


@dataclass
class SampledFrame:
    number: int  # the frame's number in the stream: its time x the stream's rate
    time_s: float  # its presentation time
    image: DecodedImage
    decoded: int  # frames this call decoded so far, this one included (after the seek)


def video_decode_failed(reason: str) -> BatchVisionError:
    return BatchVisionError(ErrorCode.VIDEO_DECODE_FAILED, f"could not decode video: {reason}")


def video_too_large(what: str) -> BatchVisionError:
    return BatchVisionError(ErrorCode.VIDEO_TOO_LARGE, f"video too large: {what}")


def _invalid(message: str) -> BatchVisionError:
    return BatchVisionError(ErrorCode.INVALID_PARAMETER, message)


async def spool(chunks: AsyncIterator[bytes], directory: Path, max_bytes: int) -> Path:
    """The upload written to a new temporary file in `directory` (the caller deletes it);
    refused with `video_too_large` as soon as it passes `max_bytes`, its partial file gone."""
    file, path = open_spool_file(directory)
    try:
        with file:
            written = 0
            async for chunk in chunks:
                written += len(chunk)
                if written > max_bytes:
                    raise video_too_large(f"over {max_bytes} bytes")
                file.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def open_spool_file(directory: Path) -> tuple[BinaryIO, Path]:
    """A new temporary file in `directory` for a video's bytes, open for writing."""
    directory.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix="video-", suffix=".part", dir=directory)
    return os.fdopen(handle, "wb"), Path(name)


def spool_bytes(data: bytes, directory: Path, max_bytes: int) -> Path:
    """Bytes already in memory (a base64 video of a JSON body) written to a temporary file."""
    if len(data) > max_bytes:
        raise video_too_large(f"over {max_bytes} bytes")
    file, path = open_spool_file(directory)
    with file:
        file.write(data)
    return path


def remove_spooled(paths: Iterable[Path | None]) -> None:
    for path in paths:
        if path is not None:
            path.unlink(missing_ok=True)


def sweep_spool(directory: Path, max_age_s: float, now: float | None = None) -> int:
    """Delete spooled files last written more than `max_age_s` ago: left by a process that died
    mid-request (a request deletes its own files as it ends, whatever its end). Only old ones,
    as other processes sharing the data directory may be using theirs. Returns how many."""
    cutoff = (time.time() if now is None else now) - max_age_s
    removed = 0
    for path in directory.glob("video-*.part") if directory.is_dir() else ():
        with contextlib.suppress(FileNotFoundError):  # another sweeper, or its request, won
            if path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
    return removed


def frame_size(info: VideoInfo, target_side: int | None) -> tuple[int, int]:
    """The width and height of the frames `sample_frames` gives for `target_side`."""
    return _scaled(info.width, info.height, target_side)


def probe(path: Path, limits: VideoLimits) -> VideoInfo:
    """The video's stream facts, refused when over `limits` (size, duration, resolution)."""
    with _opened(path) as container:
        return _checked_info(container, _video_stream(container), _size(path, limits), limits)


def _size(path: Path, limits: VideoLimits) -> int:
    size = path.stat().st_size
    if size > limits.max_bytes:
        raise video_too_large(f"over {limits.max_bytes} bytes")
    return size


def sample_frames(
    path: Path, sampling: FrameSampling, limits: VideoLimits, target_side: int | None = None
) -> Generator[SampledFrame]:
    """The sampled frames in order, one at a time (see the module docstring)."""
    size = _size(path, limits)
    with _opened(path) as container:
        stream = _video_stream(container)
        info = _checked_info(container, stream, size, limits)
        stream.thread_type = "AUTO"  # frame and slice threads: FFmpeg's own parallel decoding
        _seek(container, stream, sampling.start_time)
        yield from _sampled(container, stream, info, sampling, limits, target_side)


def _sampled(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    info: VideoInfo,
    sampling: FrameSampling,
    limits: VideoLimits,
    target_side: int | None,
) -> Iterator[SampledFrame]:
    step = 1.0 / sampling.fps if sampling.fps else 0.0
    # A frame is taken when it is the first at or past the next instant, less half a frame
    # period, so a 30 fps video sampled at 30 fps gives every frame despite rounded stamps.
    slack = 0.5 / info.fps if info.fps else 0.0
    due = sampling.start_time
    taken = 0
    time_s = sampling.start_time
    for decoded, frame in enumerate(_frames(container, stream)):
        if decoded >= limits.max_frames_decoded:
            raise video_too_large(f"more than {limits.max_frames_decoded} frames to decode")
        time_s = _frame_time(frame, stream, decoded, info)
        if sampling.end_time is not None and time_s > sampling.end_time:
            return
        if time_s + slack < due:
            continue
        number = round(time_s * info.fps) if info.fps else decoded
        image = _image(frame, info, target_side)
        yield SampledFrame(number, round(time_s, 4), image, decoded + 1)
        taken += 1
        if taken >= sampling.max_frames:
            return
        due = max(due + step, time_s + step) if step else time_s
    _check_complete(time_s, info)


TRUNCATION_SLACK_S = 1.0  # how far short of its declared duration a stream may end


def _check_complete(last_time_s: float, info: VideoInfo) -> None:
    """A stream that ends well before its declared duration was cut short: FFmpeg reads a
    truncated MP4 whose index comes first without complaint, to the last whole frame."""
    if info.duration_s is None:
        return
    period = 1.0 / info.fps if info.fps else 0.0
    if last_time_s + period + TRUNCATION_SLACK_S < info.duration_s:
        raise video_decode_failed(
            f"its frames end at {last_time_s:.1f} s of {info.duration_s:.1f} s: the file is "
            "truncated or corrupt"
        )


def _frames(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream
) -> Iterator[av.VideoFrame]:
    try:
        yield from container.decode(stream)
    except av.error.FFmpegError as exc:
        raise video_decode_failed(_reason(exc)) from None


def _frame_time(
    frame: av.VideoFrame, stream: av.video.stream.VideoStream, decoded: int, info: VideoInfo
) -> float:
    if frame.pts is not None and stream.time_base is not None:
        return float(frame.pts * stream.time_base)
    return decoded / info.fps if info.fps else 0.0


def _image(frame: av.VideoFrame, info: VideoInfo, target_side: int | None) -> DecodedImage:
    width, height = _scaled(frame.width, frame.height, target_side)
    pixels = cast(RGBArray, frame.to_ndarray(format="rgb24", width=width, height=height))
    return DecodedImage(
        pixels=pixels,
        width=frame.width,
        height=frame.height,
        format=info.codec.upper(),
        file_size=info.file_size,
    )


def _scaled(width: int, height: int, target_side: int | None) -> tuple[int, int]:
    longest = max(width, height)
    if target_side is None or longest <= target_side:
        return width, height
    scale = target_side / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


def _seek(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, start: float
) -> None:
    """To the keyframe at or before `start` (decoding from there, not from the beginning)."""
    if start <= 0 or stream.time_base is None:
        return
    try:
        container.seek(int(start / stream.time_base), stream=stream, backward=True)
    except av.error.FFmpegError:
        container.seek(0, stream=stream)  # a stream that cannot seek is read from its start


class _opened:
    """`av.open` whose failures are `video_decode_failed`, closed on exit."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.container: av.container.InputContainer | None = None

    def __enter__(self) -> av.container.InputContainer:
        try:
            self.container = av.open(str(self.path), mode="r")
        except (av.error.FFmpegError, UnicodeDecodeError) as exc:
            raise video_decode_failed(_reason(exc)) from None
        return self.container

    def __exit__(self, *exc: object) -> None:
        if self.container is not None:
            self.container.close()


# FFmpeg demuxer names of the containers taken: MP4 / MOV (one demuxer), AVI, MKV / WebM.
CONTAINERS = {"mov,mp4,m4a,3gp,3g2,mj2": "MP4/MOV", "avi": "AVI", "matroska,webm": "MKV/WebM"}


def _video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    if container.format.name not in CONTAINERS:
        supported = ", ".join(CONTAINERS.values())
        raise video_decode_failed(
            f"'{container.format.name}' is not a supported container (supported: {supported})"
        )
    if not container.streams.video:
        raise video_decode_failed("it has no video stream")
    return container.streams.video[0]


def _checked_info(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    size: int,
    limits: VideoLimits,
) -> VideoInfo:
    width, height = stream.codec_context.width, stream.codec_context.height
    if width <= 0 or height <= 0:
        raise video_decode_failed("its video stream has no frame size")
    if width * height > limits.max_pixels:
        raise video_too_large(f"{width}x{height} frames are over {limits.max_pixels} pixels")
    info = VideoInfo(
        container=container.format.name,
        codec=stream.codec_context.name,
        width=width,
        height=height,
        fps=_rate(stream.average_rate),
        duration_s=_duration(container, stream),
        file_size=size,
    )
    if info.duration_s is not None and info.duration_s > limits.max_duration_s:
        raise video_too_large(f"{info.duration_s:.0f} s is over {limits.max_duration_s:.0f} s")
    return info


def _rate(rate: Fraction | None) -> float | None:
    return float(rate) if rate else None


def _duration(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream
) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def _reason(exc: Exception) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return str(text)[:200]
