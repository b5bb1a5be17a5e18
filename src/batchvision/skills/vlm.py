"""What the vision-language skills share: sampling settings, the vlm-card check, the object
routing rule, usage reporting, and the two entry points surfaces call directly.

Entry points (besides `Skill.run`):
- `answer(ctx, model, request)`: one `VlmRequest` (any number of images) → one `VlmResult`,
  admitted against the backend's queue bound like a request (`overloaded` when full).
- `stream_text(ctx, model, request)`: an async iterator of the text chunks of a caption or query,
  admitted the same way and sharing the backend's concurrency with batch calls.

The routing rule for `detect` / `point` (`route_object`): a `model` naming a vlm card → that
VLM; else an `object` naming a class of the chosen local detector (case-insensitive) → that
detector, keeping that class (fast, free); else an `object` → the default `vlm` backend; no
`object` → the detector as before.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Protocol, TypedDict, cast

from pydantic import BaseModel, ConfigDict, Field

from batchvision.core.errors import BatchVisionError, ErrorCode, echo
from batchvision.models.cards import ModelCard
from batchvision.models.registry import ModelRegistry
from batchvision.models.vlm.calls import Generation, VlmRequest, VlmResult
from batchvision.models.vlm.config import DEFAULT_VLM_CARD
from batchvision.models.vlm.kinds import VlmModel
from batchvision.skills.base import Skill, SkillContext

VLM_MODEL_FIELD = Field(DEFAULT_VLM_CARD, description="a vlm model card name")
ObjectPhrase = Annotated[str, Field(min_length=1, max_length=500, pattern=r"\S")]


class GenerationSettings(BaseModel):
    """Sampling settings passed to the backend; absent ones keep the server's default."""

    model_config = ConfigDict(extra="forbid", strict=True)

    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1, le=8192)

    def generation(self) -> Generation:
        return Generation(self.temperature, self.top_p, self.max_tokens)


def generation_of(settings: GenerationSettings | None) -> Generation:
    return settings.generation() if settings is not None else Generation()


class UsageOutput(TypedDict):
    input_tokens: int
    output_tokens: int


def usage_of(result: VlmResult) -> UsageOutput | None:
    """The tokens the backend reported; None when it reported none (never estimated)."""
    usage = result.usage
    if usage is None:
        return None
    return {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens}


def vlm_card(registry: ModelRegistry, name: str, skill: str) -> ModelCard:
    card = registry.card(name)
    if card.task != "vlm":
        raise BatchVisionError(
            ErrorCode.INVALID_PARAMETER,
            f"{skill}: model '{echo(name)}' is a {card.task} model, not a vision-language model",
        )
    return card


@dataclass(frozen=True)
class ObjectRoute:
    model: str
    vlm: bool
    class_id: int | None = None  # the local detector's class, when it answers


def route_object(
    registry: ModelRegistry, model: str, target: str | None, skill: str
) -> ObjectRoute:
    """Who answers a detect / point request (the rule in the module docstring)."""
    card = registry.card(model)
    if card.task == "vlm":
        if target is None:
            raise BatchVisionError(
                ErrorCode.INVALID_PARAMETER, f"{skill}: a vision-language model needs 'object'"
            )
        return ObjectRoute(model, vlm=True)
    if card.task != "detect":
        raise BatchVisionError(
            ErrorCode.INVALID_PARAMETER,
            f"{skill}: model '{echo(model)}' is a {card.task} model, not a detector",
        )
    if target is None:
        return ObjectRoute(model, vlm=False)
    index = {name.lower(): i for i, name in enumerate(card.class_names())}
    class_id = index.get(target.strip().lower())
    if class_id is not None:
        return ObjectRoute(model, vlm=False, class_id=class_id)
    return ObjectRoute(DEFAULT_VLM_CARD, vlm=True)


def image_side(registry: ModelRegistry, model: str) -> int:
    return registry.card(model).remote.image_side


async def answer(ctx: SkillContext, model: str, request: VlmRequest) -> VlmResult:
    """One call to the backend `model` (any number of images), admitted like a request."""
    with ctx.engine.admit_models([model], len(request.images)):
        result: VlmResult = await ctx.engine.infer(model, request)
        return result


async def stream_text(ctx: SkillContext, model: str, request: VlmRequest) -> AsyncIterator[str]:
    """The text of a caption or query as the backend streams it, admitted like a request."""
    with ctx.engine.admit_models([model], len(request.images)):
        loaded = await ctx.engine.model(model)
        if not isinstance(loaded, VlmModel):
            raise BatchVisionError(
                ErrorCode.INVALID_PARAMETER, f"model '{echo(model)}' is not a vision-language model"
            )
        call = await ctx.engine.run_cpu(loaded.preprocess, request)
        async for chunk in loaded.stream(call):
            yield chunk


class _NamesVlm(Protocol):
    model: str


class GenerativeSkill(Skill):
    """A skill whose every call goes to the vision-language card its params name (`model`):
    checked to be a vlm card, required up front, and images decoded at the side it is sent."""

    def check_params(self, params: BaseModel) -> None:
        vlm_card(self.ctx.registry, cast(_NamesVlm, params).model, self.name)

    def models(self, params: BaseModel) -> list[str]:
        return [cast(_NamesVlm, params).model]

    def decode_side(self, params: BaseModel) -> int | None:
        return image_side(self.ctx.registry, cast(_NamesVlm, params).model)
