"""The analyze pipeline every surface shares: intake, then each task's skill, per-item results.

Requests fail as a whole only for request-level problems (unknown skill, bad parameters, a missing
model, overload). Anything wrong with one image becomes that image's ItemError.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel

from batchvision.core.errors import BatchVisionError, ErrorCode
from batchvision.core.settings import Settings
from batchvision.core.types import DecodedImage, ImageInput, ItemError, ItemResult, Task
from batchvision.engine.engine import Engine
from batchvision.intake.decode import decode_image, describe
from batchvision.intake.fetch import FetchPolicy, fetch_url
from batchvision.models.registry import ModelRegistry
from batchvision.skills import Skill, SkillContext, build_skills, unknown_skill

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedTask:
    skill: Skill
    params: BaseModel

    @property
    def name(self) -> str:
        return self.skill.name


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
        with self.engine.admit(len(inputs)):
            side = _decode_side(tasks)
            results = [
                ItemResult(index=i.index, filename=i.filename, client_id=i.client_id)
                for i in inputs
            ]
            pairs = zip(inputs, results, strict=True)
            decoded = await asyncio.gather(*(self._intake(i, r, side, limit) for i, r in pairs))
            await asyncio.gather(*(self._run_task(t, decoded, results) for t in tasks))
            return results

    async def _intake(
        self, item: ImageInput, result: ItemResult, side: int | None, max_pixels: int
    ) -> DecodedImage | None:
        start = time.perf_counter()
        try:
            if item.error is not None:
                raise BatchVisionError(item.error.code, item.error.message)
            data = item.data
            if data is None and item.url is not None:
                data = await fetch_url(item.url, self.fetch_policy)
            if data is None:
                raise BatchVisionError(ErrorCode.INVALID_REQUEST, "image has no data or url")
            image = await self.engine.run_cpu(
                decode_image, data, max_pixels=max_pixels, target_side=side
            )
        except BatchVisionError as exc:
            result.errors.append(ItemError.from_exception(exc))
            return None
        except Exception:
            log.exception("unexpected failure reading image %d", item.index)
            result.errors.append(ItemError(ErrorCode.PROCESSING_ERROR, "could not read image"))
            return None
        finally:
            result.timings_ms["decode"] = _elapsed_ms(start)
        result.image = describe(image)
        return image

    async def _run_task(
        self,
        task: PreparedTask,
        decoded: Sequence[DecodedImage | None],
        results: list[ItemResult],
    ) -> None:
        ready = [(i, image) for i, image in enumerate(decoded) if image is not None]
        if not ready:
            return
        start = time.perf_counter()
        try:
            outputs = await task.skill.run([image for _, image in ready], task.params)
            if len(outputs) != len(ready):
                raise RuntimeError(f"skill {task.name} returned {len(outputs)} for {len(ready)}")
        except Exception as exc:  # a whole-skill failure still only fails that skill's outputs
            error = task.skill.item_error(exc)
            outputs = [error] * len(ready)
        took = _elapsed_ms(start)
        for (i, _), output in zip(ready, outputs, strict=True):
            if isinstance(output, ItemError):
                results[i].errors.append(output)
            else:
                results[i].outputs[task.name] = output
            results[i].timings_ms[task.name] = took

    async def close(self) -> None:
        await self.engine.close()


def _decode_side(tasks: Sequence[PreparedTask]) -> int | None:
    sides = [task.skill.decode_side(task.params) for task in tasks]
    if any(side is None for side in sides):
        return None
    return max(side for side in sides if side is not None)
