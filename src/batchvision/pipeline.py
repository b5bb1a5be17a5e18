"""The analyze pipeline every surface shares: intake, then each task's skill, per-item results.

Requests fail as a whole only for request-level problems (unknown skill, bad parameters, a missing
model, overload). Anything wrong with one image becomes that image's ItemError.

Each image goes its own way through the request: fetched, admitted, decoded, run through every
task, then dropped, so a request never holds all of its decoded images at once. Admission reserves
the image's decoding cost (from its header dimensions) in the request's budget
(`max_decoded_mb_per_request`, waited for without a deadline: only the request's own images hold
it) and then in the server's (`max_decoded_mb`, waited for up to `decoded_wait_s`, then the image
gets `overloaded`); an image that could never fit in either gets `image_too_large`. Once decoded,
the reservation shrinks to what is really held: the pixels (reduced for the tasks' side when no
task needs full resolution), plus what the full-resolution skills allocate beside them (their
`working_bytes`, bounded by a tile: see `skills.tiles`). A request mixing full-resolution tasks
(barcode, ocr) with reduced ones (detect) decodes once at full size, derives the reduced copy
the reduced tasks read, and lets the full-size pixels go as soon as the full-resolution tasks are
done, the reservation shrinking to the reduced copy (deriving costs a few ms; decoding a PNG a
second time with a reduction would cost its whole decoding time again). Model batches still form
across images, since every skill submits its images one by one to the engine's batchers. The
`decode` timing includes the wait for admission.

A video (`analyze_video`) is sampled in a worker thread one frame at a time, never whole in
memory; each sampled frame goes through every task like an image (`_run_tasks`, `_Held`), its
pixels paid from the same budgets: the frame's bytes (known from the stream's size and the
tasks' decode side) are reserved in the request's and the server's budgets before it is
decoded. Up to `video_frames_in_flight` frames are analysed at once, so model batches form
across frames. A video that cannot be read or is over a limit is that video's error alone.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Generator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from batchvision.core import metrics
from batchvision.core.errors import BatchVisionError, ErrorCode
from batchvision.core.settings import Settings
from batchvision.core.types import (
    DecodedImage,
    FrameResult,
    ImageInput,
    ItemError,
    ItemResult,
    Task,
    VideoInput,
    VideoResult,
)
from batchvision.core.video_summary import summarize_frames
from batchvision.engine.budget import MB, ByteBudget, Reservation
from batchvision.engine.engine import Engine
from batchvision.intake.decode import decode_image, decoding_cost, describe, reduced_copy
from batchvision.intake.fetch import ByteTally, FetchPolicy, fetch_url, fetch_video
from batchvision.intake.video import (
    CONTAINERS,
    FrameSampling,
    SampledFrame,
    VideoInfo,
    VideoLimits,
    frame_size,
    probe,
    sample_frames,
    spool_directory,
    video_too_large,
)
from batchvision.models.registry import ModelRegistry
from batchvision.models.vlm.kinds import VlmModel
from batchvision.skills import Skill, SkillContext, build_skills, unknown_skill
from batchvision.skills.base import SkillOutput

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedTask:
    skill: Skill
    params: BaseModel

    @property
    def name(self) -> str:
        return self.skill.name


@dataclass(frozen=True)
class _Intake:
    """What every image of one request is read under."""

    side: int | None
    max_pixels: int
    provenance: bool  # a task reads the evidence in the original bytes
    decoded: ByteBudget  # the request's share of decoded pixels
    fetched: ByteTally  # bytes its URL images took so far
    # How long an image waits for room in the request's share: no deadline when each image is
    # let go after its tasks; images held together must not wait on each other for ever.
    request_wait_s: float | None = None


def _elapsed_ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000.0, 2)


class Pipeline:
    def __init__(self, settings: Settings, registry: ModelRegistry | None = None) -> None:
        self.settings = settings
        self.registry = registry or ModelRegistry(settings)
        self.engine = Engine(settings, self.registry)
        self.skills = build_skills(SkillContext(settings, self.registry, self.engine))
        self.fetch_policy = FetchPolicy.from_settings(settings)
        self.video_fetch_policy = FetchPolicy.for_videos(settings)
        self.video_limits = VideoLimits.from_settings(settings)

    def prepare_tasks(self, tasks: Sequence[Task]) -> list[PreparedTask]:
        """Validate skills, parameters and models before any image work starts."""
        if not tasks:
            raise BatchVisionError(ErrorCode.INVALID_REQUEST, "at least one task is required")
        prepared: list[PreparedTask] = []
        for task in tasks:
            skill = self.skills.get(task.skill)
            if skill is None:
                raise unknown_skill(task.skill)
            if any(p.name == skill.name for p in prepared):
                # Outputs are keyed by skill name: a second run would silently replace the first.
                raise BatchVisionError(
                    ErrorCode.INVALID_REQUEST, f"skill '{skill.name}' is listed more than once"
                )
            params = skill.parse_params(task.params)
            for model in skill.models(params):
                self.registry.require(model)
            prepared.append(PreparedTask(skill, params))
        return prepared

    def vlm_calls_per_image(self, tasks: Sequence[PreparedTask]) -> int:
        """How many of `tasks` call a vision-language backend for each image (what they cost
        beyond the image: `credits_per_vlm_call`)."""
        return sum(1 for task in tasks if self.calls_vlm(task))

    def calls_vlm(self, task: PreparedTask) -> bool:
        models = task.skill.models(task.params)
        return any(self.registry.card(model).task == "vlm" for model in models)

    def vlm_calls_made(self, tasks: Sequence[PreparedTask], results: Sequence[ItemResult]) -> int:
        """The vision-language calls that answered (an output of a task that calls one): what
        is billed, so a backend that failed costs nothing beyond the image."""
        names = [task.name for task in tasks if self.calls_vlm(task)]
        return sum(1 for result in results for name in names if name in result.outputs)

    async def analyze(
        self,
        inputs: Sequence[ImageInput],
        tasks: Sequence[PreparedTask],
        *,
        max_pixels: int | None = None,
    ) -> list[ItemResult]:
        """`max_pixels` tightens the server's pixel limit for surfaces that promise a lower one."""
        limit = min(max_pixels or self.settings.max_image_pixels, self.settings.max_image_pixels)
        models = [m for task in tasks for m in task.skill.models(task.params)]
        with self.engine.admit(len(inputs)), self.engine.admit_models(models, len(inputs)):
            intake = self._intake_for(tasks, limit)
            results = [
                ItemResult(index=i.index, filename=i.filename, client_id=i.client_id)
                for i in inputs
            ]
            pairs = zip(inputs, results, strict=True)
            await asyncio.gather(*(self._one(i, r, tasks, intake) for i, r in pairs))
            return results

    def _intake_for(self, tasks: Sequence[PreparedTask], max_pixels: int) -> _Intake:
        per_request = self.settings.max_decoded_mb_per_request * MB
        return _Intake(
            side=_decode_side(tasks),
            max_pixels=max_pixels,
            provenance=any(t.skill.reads_provenance(t.params) for t in tasks),
            decoded=ByteBudget(per_request, name="request's decoded-pixel budget"),
            fetched=ByteTally(self.settings.max_fetched_bytes_per_request),
        )

    async def _one(
        self, item: ImageInput, result: ItemResult, tasks: Sequence[PreparedTask], intake: _Intake
    ) -> None:
        """Read one image and run every task on it; its pixels are freed when this returns."""
        start = time.perf_counter()
        try:
            async with self._decoded(item, result, intake, start) as held:
                await self._run_tasks(held, tasks, result)
        except BatchVisionError as exc:
            result.errors.append(ItemError.from_exception(exc))
        except Exception:
            log.exception("unexpected failure reading image %d", item.index)
            result.errors.append(ItemError(ErrorCode.PROCESSING_ERROR, "could not read image"))
        finally:
            result.timings_ms.setdefault("decode", _elapsed_ms(start))

    @asynccontextmanager
    async def decoded(
        self, item: ImageInput, tasks: Sequence[PreparedTask], *, max_pixels: int | None = None
    ) -> AsyncIterator[DecodedImage]:
        """One image fetched, admitted and decoded for `tasks` outside `analyze`, for callers
        that hand its pixels to a skill themselves (a streamed answer); the pixels and their
        budget are held until exit. Raises what would have been the image's ItemError."""
        limit = min(max_pixels or self.settings.max_image_pixels, self.settings.max_image_pixels)
        result = ItemResult(index=item.index)
        with self.engine.admit(1):
            intake = self._intake_for(tasks, limit)
            async with self._decoded(item, result, intake, time.perf_counter()) as held:
                yield held.image

    @asynccontextmanager
    async def _decoded(
        self, item: ImageInput, result: ItemResult, intake: _Intake, start: float
    ) -> AsyncIterator[_Held]:
        """The image fetched, admitted and decoded, its pixels paid for until the block ends."""
        data = await self._bytes(item, intake.fetched)
        cost = await self.engine.run_cpu(
            decoding_cost, data, max_pixels=intake.max_pixels, target_side=intake.side
        )
        async with (
            intake.decoded.reserve(cost, intake.request_wait_s) as mine,
            self.engine.decoded.reserve(cost, self.settings.decoded_wait_s) as shared,
        ):
            image = await self.engine.run_cpu(
                decode_image,
                data,
                max_pixels=intake.max_pixels,
                target_side=intake.side,
                provenance=intake.provenance,
            )
            del data  # the encoded bytes of a fetched image are not needed any more
            result.timings_ms["decode"] = _elapsed_ms(start)
            result.image = describe(image)
            held = _Held(image, (mine, shared))
            del image  # `held` alone holds the pixels now, so that they can be let go
            yield held

    async def analyze_together(
        self, inputs: Sequence[ImageInput], task: PreparedTask
    ) -> list[ItemResult]:
        """Run `task` ONCE over all of `inputs` (a question about several images: one call that
        sees them all). Every image is decoded and held until the call ends; the one output, or
        its error, is carried by the first result. An image that cannot be read is its own
        result's error, and then the call is not made."""
        models = task.skill.models(task.params)
        with self.engine.admit(len(inputs)), self.engine.admit_models(models, len(inputs)):
            intake = self._intake_for([task], self.settings.max_image_pixels)
            intake = dataclasses.replace(intake, request_wait_s=self.settings.decoded_wait_s)
            results = [
                ItemResult(index=i.index, filename=i.filename, client_id=i.client_id)
                for i in inputs
            ]
            async with AsyncExitStack() as stack:
                pairs = zip(inputs, results, strict=True)
                held = await asyncio.gather(*(self._enter(stack, i, r, intake) for i, r in pairs))
                images = [h.image for h in held if h is not None]
                if len(images) == len(inputs):
                    await self._run_together(task, images, results[0])
            return results

    async def _enter(
        self, stack: AsyncExitStack, item: ImageInput, result: ItemResult, intake: _Intake
    ) -> _Held | None:
        """`_decoded` entered on `stack` (held until the stack closes), or None with the
        image's error recorded."""
        start = time.perf_counter()
        try:
            held = await stack.enter_async_context(self._decoded(item, result, intake, start))
        except BatchVisionError as exc:
            result.errors.append(ItemError.from_exception(exc))
            return None
        except Exception:
            log.exception("unexpected failure reading image %d", item.index)
            result.errors.append(ItemError(ErrorCode.PROCESSING_ERROR, "could not read image"))
            return None
        held.keep(0)
        return held

    async def _run_together(
        self, task: PreparedTask, images: list[DecodedImage], result: ItemResult
    ) -> None:
        start = time.perf_counter()
        try:
            output = await task.skill.run_together(images, task.params)
        except Exception as exc:  # as in `_run_task`: the skill's failure is the output's
            output = task.skill.item_error(exc)
        _record(task, output, result, start, images=len(images))

    async def _bytes(self, item: ImageInput, fetched: ByteTally) -> bytes:
        if item.error is not None:
            raise BatchVisionError(item.error.code, item.error.message)
        if item.data is not None:
            return item.data
        if item.url is not None:
            return await fetch_url(item.url, self.fetch_policy, fetched)
        raise BatchVisionError(ErrorCode.INVALID_REQUEST, "image has no data or url")

    async def _run_tasks(
        self, held: _Held, tasks: Sequence[PreparedTask], result: ItemResult
    ) -> None:
        """Every task on the image. When full-resolution tasks share it with tasks that need
        fewer pixels, those get a reduced copy made first, and the full-resolution pixels go
        as soon as the full-resolution tasks are done (see the module docstring)."""
        full = [t for t in tasks if t.skill.decode_side(t.params) is None]
        reduced = [t for t in tasks if t not in full]
        side = _decode_side(reduced)
        small = held.image
        if full and side is not None:
            small = await self.engine.run_cpu(reduced_copy, held.image, side)
        held.keep(self._working_bytes(full, held.image) + _extra(small, held.image))
        await asyncio.gather(
            self._run_full_resolution(full, held, result, kept_after=small.pixels.nbytes),
            *(self._run_task(t, small, result) for t in reduced),
        )

    async def _run_full_resolution(
        self, tasks: Sequence[PreparedTask], held: _Held, result: ItemResult, kept_after: int
    ) -> None:
        image = held.release()
        if tasks:
            await asyncio.gather(*(self._run_task(t, image, result) for t in tasks))
            del image
            held.keep(kept_after, pixels=False)

    def _working_bytes(self, tasks: Sequence[PreparedTask], image: DecodedImage) -> int:
        """What the full-resolution tasks allocate beside the pixels, all at once at worst."""
        height, width = image.pixels.shape[:2]
        return sum(t.skill.working_bytes(t.params, width, height) for t in tasks)

    async def _run_task(self, task: PreparedTask, image: DecodedImage, result: ItemResult) -> None:
        start = time.perf_counter()
        try:
            outputs = await task.skill.run([image], task.params)
            if len(outputs) != 1:
                raise RuntimeError(f"skill {task.name} returned {len(outputs)} outputs for 1")
            output = outputs[0]
        except Exception as exc:  # a whole-skill failure still only fails that skill's output
            output = task.skill.item_error(exc)
        _record(task, output, result, start)

    async def analyze_videos(
        self, videos: Sequence[VideoInput], tasks: Sequence[PreparedTask], sampling: FrameSampling
    ) -> list[VideoResult]:
        """Every video of one request, side by side, sharing the request's decoded-pixel budget."""
        intake = self._intake_for(tasks, self.settings.max_image_pixels)
        return list(
            await asyncio.gather(
                *(self.analyze_video(v, tasks, sampling, intake=intake) for v in videos)
            )
        )

    async def analyze_video(
        self,
        video: VideoInput,
        tasks: Sequence[PreparedTask],
        sampling: FrameSampling,
        *,
        intake: _Intake | None = None,
    ) -> VideoResult:
        """The video's sampled frames, each run through every task, and their summary; a
        video that fails (unreadable, over a limit, overloaded) has its error and no frames."""
        start = time.perf_counter()
        result = VideoResult(video.index, filename=video.filename, client_id=video.client_id)
        intake = intake or self._intake_for(tasks, self.settings.max_image_pixels)
        try:
            async with self._video_file(video) as path:
                await self._analyze_frames(path, tasks, sampling, intake, result)
        except BatchVisionError as exc:
            result.errors.append(ItemError.from_exception(exc))
        except Exception:
            log.exception("unexpected failure reading video %d", video.index)
            result.errors.append(ItemError(ErrorCode.PROCESSING_ERROR, "could not read video"))
        if result.errors:
            result.frames.clear()  # a truncated video fails whole (intake.video)
        result.summary = summarize_frames(result.frames, [task.name for task in tasks])
        result.timings_ms["total"] = _elapsed_ms(start)
        return result

    @asynccontextmanager
    async def _video_file(self, video: VideoInput) -> AsyncIterator[Path]:
        """The video's file: the one its surface spooled, or its URL fetched to a temporary
        file that is deleted when the block ends."""
        if video.error is not None:
            raise BatchVisionError(video.error.code, video.error.message)
        if video.path is not None:
            yield video.path
            return
        if video.url is None:
            raise BatchVisionError(ErrorCode.INVALID_REQUEST, "video has no data or url")
        directory = spool_directory(self.settings)
        path = await fetch_video(video.url, self.video_fetch_policy, directory)
        try:
            yield path
        finally:
            path.unlink(missing_ok=True)

    async def _analyze_frames(
        self,
        path: Path,
        tasks: Sequence[PreparedTask],
        sampling: FrameSampling,
        intake: _Intake,
        result: VideoResult,
    ) -> None:
        info = await self.engine.run_cpu(probe, path, self.video_limits)
        result.video = video_facts(info)
        slots = self.settings.video_frames_in_flight
        models = [m for task in tasks for m in task.skill.models(task.params)]
        frames = sample_frames(path, sampling, self.video_limits, intake.side)
        cost = self._frame_cost(info, tasks)
        self._check_frame_fits(cost, intake)
        source = _FrameSource(self.engine, frames)
        with self.engine.admit(slots), self.engine.admit_models(models, slots):
            try:
                await self._frames_in_flight(source, cost, tasks, intake, result)
            finally:
                await source.close()

    def _check_frame_fits(self, cost: int, intake: _Intake) -> None:
        for budget in (intake.decoded, self.engine.decoded):
            if not budget.fits_ever(cost):
                raise video_too_large(
                    f"one frame needs {cost // MB} MB of memory; the {budget.name} is "
                    f"{budget.capacity // MB} MB"
                )

    def _frame_cost(self, info: VideoInfo, tasks: Sequence[PreparedTask]) -> int:
        """What one frame holds at its peak: its pixels at the tasks' side as converted, and
        what full-resolution tasks allocate beside them (with the reduced copy for the rest)."""
        width, height = frame_size(info, _decode_side(tasks))
        full = [t for t in tasks if t.skill.decode_side(t.params) is None]
        reduced_side = _decode_side([t for t in tasks if t not in full])
        working = sum(t.skill.working_bytes(t.params, width, height) for t in full)
        if full and reduced_side is not None:
            small_w, small_h = frame_size(info, reduced_side)
            working += small_w * small_h * 3
        return width * height * FRAME_BYTES_PER_PIXEL + working

    async def _frames_in_flight(
        self,
        source: _FrameSource,
        cost: int,
        tasks: Sequence[PreparedTask],
        intake: _Intake,
        result: VideoResult,
    ) -> None:
        """Frames read one after another, each analysed in its own task, at most
        `video_frames_in_flight` at once; results kept in time order."""
        running: set[asyncio.Task[None]] = set()
        try:
            while True:
                if len(running) >= self.settings.video_frames_in_flight:
                    _, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                stack = AsyncExitStack()
                try:
                    reservations = await self._reserve_frame(stack, cost, intake)
                    frame = await source.next()
                except BaseException:
                    await stack.aclose()
                    raise
                if frame is None:
                    await stack.aclose()
                    break
                frame_result = _frame_result(len(result.frames), frame)
                result.frames.append(frame_result)
                held = _Held(frame.image, reservations)
                del frame
                running.add(asyncio.create_task(self._frame(stack, held, tasks, frame_result)))
            await asyncio.gather(*running)
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    async def _reserve_frame(
        self, stack: AsyncExitStack, cost: int, intake: _Intake
    ) -> tuple[Reservation, Reservation]:
        mine = await stack.enter_async_context(intake.decoded.reserve(cost, intake.request_wait_s))
        wait_s = self.settings.decoded_wait_s
        shared = await stack.enter_async_context(self.engine.decoded.reserve(cost, wait_s))
        return mine, shared

    async def _frame(
        self, stack: AsyncExitStack, held: _Held, tasks: Sequence[PreparedTask], result: FrameResult
    ) -> None:
        """Every task on one frame; its reservations are returned when this ends."""
        async with stack:
            try:
                await self._run_tasks(held, tasks, result)
            except Exception:  # each task's own failure is already its output's (`_run_task`)
                log.exception("unexpected failure analysing frame %d", result.number)
                result.errors.append(
                    ItemError(ErrorCode.PROCESSING_ERROR, "could not analyse frame")
                )

    async def backend_health(self) -> dict[str, Any]:
        """Each vision-language backend card: its reachability, latency, breaker and counters,
        or why it is not configured (for `/readyz`)."""
        health: dict[str, Any] = {}
        for status in self.registry.statuses():
            if status.card.task != "vlm":
                continue
            if status.state != "installed":
                health[status.card.name] = {"configured": False, "detail": status.found.detail}
                continue
            model = await self.engine.model(status.card.name)
            if isinstance(model, VlmModel):
                probe = await model.probe()
                health[status.card.name] = {"configured": True, **probe, **vars(model.counters)}
        return health

    async def close(self) -> None:
        await self.engine.close()


def _record(
    task: PreparedTask, output: SkillOutput, result: ItemResult, start: float, images: int = 1
) -> None:
    """A task's output (or its error) on `result`, with how long it took; `images`: how many
    images it was run on (several for a question about them together)."""
    failed = isinstance(output, ItemError)
    if isinstance(output, ItemError):
        result.errors.append(output)
    else:
        result.outputs[task.name] = output
    result.timings_ms[task.name] = _elapsed_ms(start)
    metrics.SKILL_IMAGES.labels(skill=task.name, outcome="error" if failed else "ok").inc(images)


def _decode_side(tasks: Sequence[PreparedTask]) -> int | None:
    sides = [task.skill.decode_side(task.params) for task in tasks]
    if not sides or any(side is None for side in sides):
        return None
    return max(side for side in sides if side is not None)


# What a sampled frame costs per pixel at its peak: the RGB array it becomes, and the converted
# frame FFmpeg's swscale writes before it is copied out.
FRAME_BYTES_PER_PIXEL = 6


def video_facts(info: VideoInfo) -> dict[str, Any]:
    """The video facts every video result carries."""
    return {
        "width": info.width,
        "height": info.height,
        "fps": round(info.fps, 3) if info.fps else None,
        "duration_s": round(info.duration_s, 3) if info.duration_s is not None else None,
        "format": CONTAINERS.get(info.container, info.container),
        "codec": info.codec,
        "file_size": info.file_size,
    }


def _frame_result(index: int, frame: SampledFrame) -> FrameResult:
    result = FrameResult(index, number=frame.number, time_s=frame.time_s)
    result.image = describe(frame.image)  # the full frame size: outputs' boxes are in it
    return result


class _FrameSource:
    """A video's sampled frames, decoded one at a time on the CPU pool: never two decodes at
    once (a PyAV container is not for concurrent use), and closed only once none is running
    (a cancelled request must not close the container under a decode still in its thread)."""

    def __init__(self, engine: Engine, frames: Generator[SampledFrame]) -> None:
        self._engine = engine
        self._frames = frames
        self._step: asyncio.Future[SampledFrame | None] | None = None

    async def next(self) -> SampledFrame | None:
        self._step = asyncio.ensure_future(self._engine.run_cpu(next, self._frames, None))
        return await asyncio.shield(self._step)

    async def close(self) -> None:
        if self._step is not None and not self._step.done():
            await asyncio.wait([self._step])
        await self._engine.run_cpu(self._frames.close)


def _extra(small: DecodedImage, image: DecodedImage) -> int:
    return 0 if small is image else small.pixels.nbytes


class _Held:
    """One image's decoded pixels and the reservations that pay for them: `keep` shrinks the
    reservations to what is still held, `release` hands the pixels to their last user."""

    def __init__(self, image: DecodedImage, reservations: Sequence[Reservation]) -> None:
        self._image: DecodedImage | None = image
        self._pixels = image.pixels.nbytes
        self._reservations = reservations

    @property
    def image(self) -> DecodedImage:
        assert self._image is not None, "the pixels were released"
        return self._image

    def release(self) -> DecodedImage:
        image = self.image
        self._image = None
        return image

    def keep(self, nbytes: int, *, pixels: bool = True) -> None:
        """Hold `nbytes` beside the pixels (or, `pixels=False`, once they are gone)."""
        total = nbytes + (self._pixels if pixels else 0)
        for reservation in self._reservations:
            reservation.shrink(total)
