"""The analyze pipeline every surface shares: intake, then each task's skill, per-item results.

Requests fail as a whole only for request-level problems (unknown skill, bad parameters, a missing
model, overload). Anything wrong with one image becomes that image's ItemError.

Each image goes its own way through the request: fetched, admitted, decoded, run through every
task, then dropped, so a request never holds all of its decoded images at once. Admission reserves
the image's decoding cost (from its header dimensions) in the request's budget
(`max_decoded_mb_per_request`, waited for without a deadline: only the request's own images hold
it) and then in the server's (`max_decoded_mb`, waited for up to `decoded_wait_s`, then the image
gets `overloaded`); an image that could never fit in either gets `image_too_large`. Once decoded,
the reservation shrinks to the pixels kept when they were reduced for the tasks' side; at full
resolution it stays, to cover the working copies full-resolution skills make. Model batches
still form across images, since every skill submits its images one by one to the engine's
batchers. The `decode` timing includes the wait for admission.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from batchvision.core.errors import BatchVisionError, ErrorCode
from batchvision.core.settings import Settings
from batchvision.core.types import DecodedImage, ImageInput, ItemError, ItemResult, Task
from batchvision.engine.budget import MB, ByteBudget, Reservation
from batchvision.engine.engine import Engine
from batchvision.intake.decode import decode_image, decoding_cost, describe
from batchvision.intake.fetch import ByteTally, FetchPolicy, fetch_url
from batchvision.models.registry import ModelRegistry
from batchvision.models.vlm.kinds import VlmModel
from batchvision.skills import Skill, SkillContext, build_skills, unknown_skill

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
    decoded: ByteBudget  # the request's share of decoded pixels
    fetched: ByteTally  # bytes its URL images took so far


def _elapsed_ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000.0, 2)


class Pipeline:
    def __init__(self, settings: Settings, registry: ModelRegistry | None = None) -> None:
        self.settings = settings
        self.registry = registry or ModelRegistry(settings)
        self.engine = Engine(settings, self.registry)
        self.skills = build_skills(SkillContext(settings, self.registry, self.engine))
        self.fetch_policy = FetchPolicy.from_settings(settings)

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
            decoded=ByteBudget(per_request, name="request's decoded-pixel budget"),
            fetched=ByteTally(self.settings.max_fetched_bytes_per_request),
        )

    async def _one(
        self, item: ImageInput, result: ItemResult, tasks: Sequence[PreparedTask], intake: _Intake
    ) -> None:
        """Read one image and run every task on it; its pixels are freed when this returns."""
        start = time.perf_counter()
        try:
            data = await self._bytes(item, intake.fetched)
            cost = await self.engine.run_cpu(
                decoding_cost, data, max_pixels=intake.max_pixels, target_side=intake.side
            )
            async with (
                intake.decoded.reserve(cost) as mine,
                self.engine.decoded.reserve(cost, self.settings.decoded_wait_s) as shared,
            ):
                image = await self._decode(data, intake, (mine, shared))
                del data  # the encoded bytes of a fetched image are not needed any more
                result.timings_ms["decode"] = _elapsed_ms(start)
                result.image = describe(image)
                await asyncio.gather(*(self._run_task(t, image, result) for t in tasks))
        except BatchVisionError as exc:
            result.errors.append(ItemError.from_exception(exc))
        except Exception:
            log.exception("unexpected failure reading image %d", item.index)
            result.errors.append(ItemError(ErrorCode.PROCESSING_ERROR, "could not read image"))
        finally:
            result.timings_ms.setdefault("decode", _elapsed_ms(start))

    async def _bytes(self, item: ImageInput, fetched: ByteTally) -> bytes:
        if item.error is not None:
            raise BatchVisionError(item.error.code, item.error.message)
        if item.data is not None:
            return item.data
        if item.url is not None:
            return await fetch_url(item.url, self.fetch_policy, fetched)
        raise BatchVisionError(ErrorCode.INVALID_REQUEST, "image has no data or url")

    async def _decode(
        self, data: bytes, intake: _Intake, reservations: Sequence[Reservation]
    ) -> DecodedImage:
        image = await self.engine.run_cpu(
            decode_image, data, max_pixels=intake.max_pixels, target_side=intake.side
        )
        if intake.side is not None:
            for reservation in reservations:
                reservation.shrink(image.pixels.nbytes)
        # At full resolution the decoding cost stays reserved: the skills that ask for it work on
        # copies of their own (zxing-cpp's luminance and binarized matrices take another 246 MB
        # on a 7900x7900 image, about 4 bytes per pixel beside the 3 of the RGB array).
        return image

    async def _run_task(self, task: PreparedTask, image: DecodedImage, result: ItemResult) -> None:
        start = time.perf_counter()
        try:
            outputs = await task.skill.run([image], task.params)
            if len(outputs) != 1:
                raise RuntimeError(f"skill {task.name} returned {len(outputs)} outputs for 1")
            output = outputs[0]
        except Exception as exc:  # a whole-skill failure still only fails that skill's output
            output = task.skill.item_error(exc)
        if isinstance(output, ItemError):
            result.errors.append(output)
        else:
            result.outputs[task.name] = output
        result.timings_ms[task.name] = _elapsed_ms(start)

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


def _decode_side(tasks: Sequence[PreparedTask]) -> int | None:
    sides = [task.skill.decode_side(task.params) for task in tasks]
    if any(side is None for side in sides):
        return None
    return max(side for side in sides if side is not None)
