"""A skill maps a batch of decoded images to a batch of results, one per image, in order."""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ValidationError

from batchvision.core.errors import BatchVisionError, ErrorCode, describe_problems
from batchvision.core.settings import Settings
from batchvision.core.types import DecodedImage, ItemError
from batchvision.engine.engine import Engine
from batchvision.models.registry import ModelRegistry

log = logging.getLogger(__name__)

# A skill's output for one image: a JSON-shaped mapping (TypedDicts in each skill), boxes and
# points in pixels of the original image; surfaces convert to their own conventions.
SkillOutput = Mapping[str, Any] | ItemError


@dataclass
class SkillContext:
    settings: Settings
    registry: ModelRegistry
    engine: Engine


class Skill(ABC):
    name: ClassVar[str]
    description: ClassVar[str]
    Params: ClassVar[type[BaseModel]]

    def __init__(self, ctx: SkillContext) -> None:
        self.ctx = ctx

    def parse_params(self, raw: dict[str, Any]) -> BaseModel:
        try:
            params = self.Params.model_validate(raw)
        except ValidationError as exc:
            raise BatchVisionError(
                ErrorCode.INVALID_PARAMETER,
                f"{self.name}: {describe_problems(exc.errors(), where='params')}",
            ) from None
        self.check_params(params)
        return params

    def check_params(self, params: BaseModel) -> None:  # noqa: B027 - an optional hook
        """Checks that need the registry (model names, class names); raise invalid_parameter."""

    def models(self, params: BaseModel) -> list[str]:
        """Models this call needs; the pipeline refuses the request up front if one is missing."""
        return []

    def decode_side(self, params: BaseModel) -> int | None:
        """Longest image side this skill needs; None asks for full resolution."""
        return None

    def reads_provenance(self, params: BaseModel) -> bool:
        """Whether this skill reads `DecodedImage.provenance` (read from the original bytes at
        decode time, only for requests with such a task)."""
        return False

    def working_bytes(self, params: BaseModel, width: int, height: int) -> int:
        """Memory the skill allocates beside the decoded pixels while it reads one image of
        `width` x `height` pixels: what the pipeline keeps reserved for it. Skills whose
        models take a fixed input size allocate little beside the pixels (their models'
        memory is budgeted by the registry)."""
        return 0

    @abstractmethod
    async def run(self, images: list[DecodedImage], params: BaseModel) -> list[SkillOutput]:
        """One output per image, in order. A failure that concerns one image is an ItemError."""

    async def run_together(self, images: list[DecodedImage], params: BaseModel) -> SkillOutput:
        """ONE output about all of `images` together (`Pipeline.analyze_together`). Skills
        that read an image at a time take exactly one here."""
        if len(images) != 1:
            raise BatchVisionError(
                ErrorCode.INVALID_REQUEST, f"{self.name} reads one image at a time"
            )
        return (await self.run(images, params))[0]

    async def per_item(self, work: Iterable[Awaitable[Mapping[str, Any]]]) -> list[SkillOutput]:
        """Await one output per image concurrently; an image whose work raises gets an
        ItemError, while cancellation (not a per-item failure) still stops the request."""
        results = await asyncio.gather(*work, return_exceptions=True)
        outputs: list[SkillOutput] = []
        for result in results:
            if isinstance(result, Exception):
                outputs.append(self.item_error(result))
            elif isinstance(result, BaseException):
                raise result
            else:
                outputs.append(result)
        return outputs

    def item_error(self, exc: Exception) -> ItemError:
        if isinstance(exc, BatchVisionError):
            return ItemError.from_exception(exc, self.name)
        log.exception("skill %s failed on one image", self.name, exc_info=exc)
        return ItemError(ErrorCode.PROCESSING_ERROR, f"{self.name} failed on this image", self.name)

    @classmethod
    def describe(cls) -> dict[str, Any]:
        return {
            "name": cls.name,
            "description": cls.description,
            "params": cls.Params.model_json_schema(),
        }
