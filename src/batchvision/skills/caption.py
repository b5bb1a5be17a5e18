"""`caption`: a description of each image by a vision-language backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Literal, NotRequired, TypedDict, cast

from pydantic import BaseModel, ConfigDict

from batchvision.core.types import DecodedImage
from batchvision.models.vlm.calls import VlmRequest, VlmResult
from batchvision.skills.base import SkillOutput
from batchvision.skills.vlm import (
    VLM_MODEL_FIELD,
    GenerationSettings,
    GenerativeSkill,
    UsageOutput,
    answer,
    generation_of,
    stream_text,
    usage_of,
)


class CaptionParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    model: str = VLM_MODEL_FIELD
    length: Literal["short", "normal", "long"] = "normal"
    settings: GenerationSettings | None = None


class CaptionOutput(TypedDict):
    model: str
    caption: str
    usage: NotRequired[UsageOutput]


class CaptionSkill(GenerativeSkill):
    name = "caption"
    description = "A caption of each image (short, normal or long) from a vision-language model."
    Params = CaptionParams

    async def run(self, images: list[DecodedImage], params: BaseModel) -> list[SkillOutput]:
        caption = cast(CaptionParams, params)
        return await self.per_item(self._one(image, caption) for image in images)

    async def _one(self, image: DecodedImage, params: CaptionParams) -> CaptionOutput:
        return caption_output(
            await self.ctx.engine.infer(params.model, self.request(image, params))
        )

    def stream(self, image: DecodedImage, params: CaptionParams) -> AsyncIterator[str]:
        """The caption in chunks as the backend streams it (real-time surfaces)."""
        return stream_text(self.ctx, params.model, self.request(image, params))

    async def caption(self, image: DecodedImage, params: CaptionParams) -> CaptionOutput:
        """One image's caption outside a pipeline request, admitted like one."""
        return caption_output(await answer(self.ctx, params.model, self.request(image, params)))

    @staticmethod
    def request(image: DecodedImage, params: CaptionParams) -> VlmRequest:
        return VlmRequest(
            "caption", (image,), length=params.length, generation=generation_of(params.settings)
        )


def caption_output(result: VlmResult) -> CaptionOutput:
    output: CaptionOutput = {"model": result.model, "caption": result.text or ""}
    if (usage := usage_of(result)) is not None:
        output["usage"] = usage
    return output
