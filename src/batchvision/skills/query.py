"""`query`: a vision-language backend's answer to a question about an image (or several).

`QuerySkill.ask(images, params)` answers ONE question over several images in one call (the
backend sees them all), and so does `run_together` inside a pipeline request
(`Pipeline.analyze_together`); `run` answers it for each image on its own, as every skill does.
`QuerySkill.stream(images, params)` yields the answer's text in chunks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, NotRequired, TypedDict, cast

from pydantic import BaseModel, ConfigDict, Field

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

Question = Annotated[str, Field(min_length=1, max_length=4000, pattern=r"\S")]


class QueryParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    model: str = VLM_MODEL_FIELD
    question: Question
    reasoning: bool = Field(False, description="also return the model's reasoning, if it gives one")
    settings: GenerationSettings | None = None


class QueryOutput(TypedDict):
    model: str
    answer: str
    reasoning: NotRequired[str]
    usage: NotRequired[UsageOutput]


class QuerySkill(GenerativeSkill):
    name = "query"
    description = "An answer to a question about the image from a vision-language model."
    Params = QueryParams

    async def run(self, images: list[DecodedImage], params: BaseModel) -> list[SkillOutput]:
        query = cast(QueryParams, params)
        return await self.per_item(self._one(image, query) for image in images)

    async def _one(self, image: DecodedImage, params: QueryParams) -> QueryOutput:
        return query_output(
            await self.ctx.engine.infer(params.model, self.request([image], params))
        )

    async def run_together(self, images: list[DecodedImage], params: BaseModel) -> SkillOutput:
        """One answer about all of `images`, the backend admitted by the pipeline's request."""
        query = cast(QueryParams, params)
        return query_output(await self.ctx.engine.infer(query.model, self.request(images, query)))

    async def ask(self, images: list[DecodedImage], params: QueryParams) -> QueryOutput:
        """One answer about all of `images` together, from one call to the backend."""
        return query_output(await answer(self.ctx, params.model, self.request(images, params)))

    def stream(self, images: list[DecodedImage], params: QueryParams) -> AsyncIterator[str]:
        """The answer in chunks as the backend streams it (real-time surfaces)."""
        return stream_text(self.ctx, params.model, self.request(images, params))

    @staticmethod
    def request(images: list[DecodedImage], params: QueryParams) -> VlmRequest:
        return VlmRequest(
            "query",
            tuple(images),
            question=params.question,
            reasoning=params.reasoning,
            generation=generation_of(params.settings),
        )


def query_output(result: VlmResult) -> QueryOutput:
    output: QueryOutput = {"model": result.model, "answer": result.text or ""}
    if result.reasoning is not None:
        output["reasoning"] = result.reasoning
    if (usage := usage_of(result)) is not None:
        output["usage"] = usage
    return output
