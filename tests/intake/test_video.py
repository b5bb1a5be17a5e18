"""Video intake on the real clips of ../shared/evaldata/video: stream facts, frame sampling
(rate, window, seek, cap, size), limits, and the refusals of what is not a whole video."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from batchvision.core.errors import BatchVisionError, ErrorCode
from batchvision.intake.video import (
    FrameSampling,
    VideoLimits,
    probe,
    sample_frames,
    spool,
)
from conftest import COCO_IMAGES, EVALDATA

VIDEOS = EVALDATA / "video"
LABELS = json.loads((VIDEOS / "labels.json").read_text())
CAR = VIDEOS / "intel_car-detection.mp4"  # 768x432, 12.5 fps, 377 frames
BABOON = VIDEOS / "zamba_gorongosa_baboon_07120049.AVI"  # a tiny AVI


@pytest.mark.parametrize("name", sorted(LABELS))
def test_probe_reads_the_labelled_size_and_rate(name: str) -> None:
    info = probe(VIDEOS / name, VideoLimits())
    label = LABELS[name]
    assert (info.width, info.height) == (label["width"], label["height"])
    assert info.file_size == (VIDEOS / name).stat().st_size
    if info.fps is not None and info.container != "avi":
        assert info.fps == pytest.approx(label["fps"], rel=0.01)


def test_every_frame_when_no_rate_is_given() -> None:
    sampling = FrameSampling(fps=None, max_frames=100_000)
    frames = list(sample_frames(CAR, sampling, VideoLimits(), target_side=32))
    assert len(frames) == LABELS[CAR.name]["frames_decoded"]
    assert [f.number for f in frames[:3]] == [0, 1, 2]
    assert all(b.time_s > a.time_s for a, b in itertools.pairwise(frames))


def test_one_frame_per_second_inside_the_window_at_the_size_asked() -> None:
    sampling = FrameSampling(fps=1.0, start_time=10.0, end_time=15.0)
    frames = list(sample_frames(CAR, sampling, VideoLimits(), target_side=384))
    times = [f.time_s for f in frames]
    assert len(frames) in (5, 6)
    for expected, got in zip(range(10, 16), times, strict=False):
        assert got == pytest.approx(expected, abs=1 / 12.5 + 1e-6)
    for frame in frames:
        assert frame.image.pixels.shape == (216, 384, 3)  # 768x432 halved, RGB
        assert (frame.image.width, frame.image.height) == (768, 432)  # the original size
        assert frame.number == round(frame.time_s * 12.5)


def test_a_late_start_seeks_instead_of_decoding_from_the_beginning() -> None:
    sampling = FrameSampling(fps=1.0, start_time=25.0, max_frames=1)
    [frame] = sample_frames(CAR, sampling, VideoLimits(), target_side=64)
    assert frame.time_s == pytest.approx(25.0, abs=0.1)
    assert frame.decoded < frame.number  # far fewer frames decoded than lie before it


def test_max_frames_caps_the_sample() -> None:
    frames = list(sample_frames(CAR, FrameSampling(fps=2.0, max_frames=4), VideoLimits(), 64))
    assert [f.time_s for f in frames] == pytest.approx([0.0, 0.5, 1.0, 1.5], abs=0.08)


def test_a_tiny_avi_is_read() -> None:
    frames = list(sample_frames(BABOON, FrameSampling(fps=None, max_frames=5), VideoLimits()))
    assert len(frames) == 5
    assert frames[0].image.pixels.shape[2] == 3 and frames[0].image.format == "MPEG4"


@pytest.mark.parametrize(
    ("limits", "fragment"),
    [
        (VideoLimits(max_duration_s=10), "30 s is over 10 s"),
        (VideoLimits(max_pixels=640 * 360), "768x432 frames"),
        (VideoLimits(max_bytes=1000), "over 1000 bytes"),
    ],
)
def test_limits_refuse_before_any_frame(limits: VideoLimits, fragment: str) -> None:
    with pytest.raises(BatchVisionError) as caught:
        next(sample_frames(CAR, FrameSampling(), limits))
    assert caught.value.code is ErrorCode.VIDEO_TOO_LARGE
    assert fragment in caught.value.message


def test_decoded_frames_are_counted_against_their_limit() -> None:
    sampling = FrameSampling(fps=0.1, max_frames=100)  # few sampled, every one decoded
    with pytest.raises(BatchVisionError) as caught:
        list(sample_frames(CAR, sampling, VideoLimits(max_frames_decoded=50), 32))
    assert caught.value.code is ErrorCode.VIDEO_TOO_LARGE


def _truncated(tmp_path: Path) -> Path:
    data = CAR.read_bytes()
    path = tmp_path / "half.mp4"
    path.write_bytes(data[: len(data) // 2])  # its index ('moov') is at the end: now gone
    return path


@pytest.mark.parametrize(
    "make",
    [
        lambda tmp: _truncated(tmp),
        lambda tmp: _write(tmp / "noise.mp4", bytes(range(256)) * 64),
        lambda tmp: _write(tmp / "empty.webm", b""),
        lambda tmp: _write(tmp / "photo.mp4", next(COCO_IMAGES.glob("*.jpg")).read_bytes()),
    ],
    ids=["truncated", "noise", "empty", "a-jpeg"],
)
def test_what_is_not_a_whole_video_is_video_decode_failed(make, tmp_path: Path) -> None:
    path = make(tmp_path)
    with pytest.raises(BatchVisionError) as caught:
        list(sample_frames(path, FrameSampling(), VideoLimits()))
    assert caught.value.code is ErrorCode.VIDEO_DECODE_FAILED
    assert caught.value.message.startswith("could not decode video: ")


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"fps": 0}, "fps"),
        ({"fps": 1000}, "fps"),
        ({"start_time": -1}, "start_time"),
        ({"start_time": 5, "end_time": 5}, "end_time"),
        ({"max_frames": 0}, "max_frames"),
    ],
)
def test_bad_sampling_is_invalid_parameter(fields: dict[str, float], fragment: str) -> None:
    with pytest.raises(BatchVisionError) as caught:
        FrameSampling(**fields)  # type: ignore[arg-type]
    assert caught.value.code is ErrorCode.INVALID_PARAMETER and fragment in caught.value.message


async def _chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def test_spool_writes_the_upload_and_refuses_it_past_the_limit(tmp_path: Path) -> None:
    data = BABOON.read_bytes()
    path = asyncio.run(spool(_chunks(data, 4096), tmp_path / "spool", max_bytes=len(data)))
    assert path.read_bytes() == data
    assert probe(path, VideoLimits()).width == LABELS[BABOON.name]["width"]
    with pytest.raises(BatchVisionError) as caught:
        asyncio.run(spool(_chunks(data, 4096), tmp_path / "spool", max_bytes=len(data) - 1))
    assert caught.value.code is ErrorCode.VIDEO_TOO_LARGE
    assert sorted(p.name for p in (tmp_path / "spool").iterdir()) == [path.name]  # no leftover
