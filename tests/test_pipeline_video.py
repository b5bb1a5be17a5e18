"""`Pipeline.analyze_video` with the real detector: frames paid from the decoded-pixel budgets
and analysed several at once, a frame that could never fit, and a cancelled video leaving
nothing behind (no reservation, no fetched file)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from batchvision.core.types import Task, VideoInput, VideoResult
from batchvision.engine.budget import MB
from batchvision.intake.video import FrameSampling, VideoLimits, frame_size, probe
from batchvision.pipeline import FRAME_BYTES_PER_PIXEL, Pipeline
from conftest import EVALDATA, make_settings
from local_http import RouteHandler, serve_routes

CAR = EVALDATA / "video" / "intel_car-detection.mp4"


def one_frame_cost(pipeline: Pipeline, skill: str) -> int:
    [task] = pipeline.prepare_tasks([Task(skill)])
    width, height = frame_size(probe(CAR, VideoLimits()), task.skill.decode_side(task.params))
    return width * height * FRAME_BYTES_PER_PIXEL


async def _peak_while(pipeline: Pipeline, work: Awaitable[VideoResult]) -> tuple[VideoResult, int]:
    """The work's result and the most decoded-pixel bytes the server held while it ran."""
    peak = 0
    task = asyncio.ensure_future(work)
    while not task.done():
        peak = max(peak, pipeline.engine.decoded.in_use)
        await asyncio.sleep(0.001)
    return await task, peak


def run_video(tmp_path: Path, skill: str, **settings: Any) -> tuple[VideoResult, int, int, int]:
    """The result, the peak held, what one frame costs, and what is held after."""

    async def go() -> tuple[VideoResult, int, int, int]:
        pipeline = Pipeline(make_settings(tmp_path, **settings))
        try:
            tasks = pipeline.prepare_tasks([Task(skill)])
            sampling = FrameSampling(fps=2.0, max_frames=24)
            work = pipeline.analyze_video(VideoInput(0, path=CAR), tasks, sampling)
            result, peak = await _peak_while(pipeline, work)
            return result, peak, one_frame_cost(pipeline, skill), pipeline.engine.decoded.in_use
        finally:
            await pipeline.close()

    return asyncio.run(go())


def test_frames_are_analysed_several_at_once_within_the_decoded_pixel_budget(
    tmp_path: Path,
) -> None:
    result, peak, cost, after = run_video(tmp_path, "detect", video_frames_in_flight=8)
    assert result.errors == [] and len(result.frames) == 24
    assert peak >= 2 * cost  # frames overlapped, so the detector's batches could span them
    assert after == 0


def test_a_budget_for_one_frame_still_reads_the_whole_video_one_frame_at_a_time(
    tmp_path: Path,
) -> None:
    # 1 MB: one detect frame of this clip (~0.8 MB at the detector's side) and no second.
    result, peak, cost, after = run_video(tmp_path, "detect", max_decoded_mb=1)
    assert cost < MB < 2 * cost
    assert result.errors == [] and len(result.frames) == 24
    assert [f.time_s for f in result.frames] == sorted(f.time_s for f in result.frames)
    assert 0 < peak <= MB and after == 0


def test_a_frame_that_could_never_fit_fails_its_video(tmp_path: Path) -> None:
    # barcode reads full frames: 768x432 x 6 bytes is about 2 MB.
    result, _, cost, after = run_video(tmp_path, "barcode", max_decoded_mb=1)
    assert cost > MB
    assert [e.code.value for e in result.errors] == ["video_too_large"]
    assert "frame" in result.errors[0].message and result.frames == []
    assert after == 0


def _clip(h: RouteHandler) -> None:
    h.send(200, CAR.read_bytes(), Content_Type="video/mp4")


async def _cancel_after_first_frame(
    pipeline: Pipeline, start: Callable[[], Awaitable[Any]]
) -> None:
    task = asyncio.ensure_future(start())
    while pipeline.engine.decoded.in_use == 0:
        assert not task.done()
        await asyncio.sleep(0.001)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_a_cancelled_video_returns_its_reservations_and_deletes_its_fetched_file(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path, url_allow_hosts=["127.0.0.1"])
    spool = settings.data_dir / "tmp" / "videos"

    async def go(base: str) -> int:
        pipeline = Pipeline(settings)
        try:
            tasks = pipeline.prepare_tasks([Task("detect")])
            video = VideoInput(0, url=f"{base}/car.mp4")
            sampling = FrameSampling(fps=None, max_frames=1000)
            await _cancel_after_first_frame(
                pipeline, lambda: pipeline.analyze_video(video, tasks, sampling)
            )
            return pipeline.engine.decoded.in_use
        finally:
            await pipeline.close()

    with serve_routes({"/car.mp4": _clip}) as base:
        assert asyncio.run(go(base)) == 0
    assert list(spool.iterdir()) == []
