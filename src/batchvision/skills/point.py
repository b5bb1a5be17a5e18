"""`point`: where each instance of an object phrase is, as points in pixels of the image.

Routed by the rule in `skills.vlm` (`route_object`): a class of the local detector is answered
by the detector (its boxes' centres), any other phrase by the vision-language backend.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict, cast

from pydantic import BaseModel, ConfigDict, Field

from batchvision.core.types import DecodedImage
from batchvision.models.decoders import DecodeParams, Detections
from batchvision.models.detector import DetectRequest
from batchvision.models.vlm.calls import VlmRequest
from batchvision.skills.base import Skill, SkillOutput
from batchvision.skills.detect import DEFAULT_DETECT_MODEL
from batchvision.skills.vlm import ObjectPhrase, ObjectRoute, UsageOutput, route_object, usage_of


class PointParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    model: str = Field(DEFAULT_DETECT_MODEL, description="a detect or vlm model card name")
    object: ObjectPhrase
    threshold: float = Field(0.25, ge=0.0, le=1.0, description="detector: minimum score")


class PointXY(TypedDict):
    x: float
    y: float


class PointOutput(TypedDict):
    model: str
    points: list[PointXY]
    usage: NotRequired[UsageOutput]


class PointSkill(Skill):
    name = "point"
    description = (
        "Points (pixels) at every instance of an object phrase; detector classes run locally."
    )
    Params = PointParams

    def route(self, params: BaseModel) -> ObjectRoute:
        point = cast(PointParams, params)
        return route_object(self.ctx.registry, point.model, point.object, self.name)

    def check_params(self, params: BaseModel) -> None:
        self.route(params)

    def models(self, params: BaseModel) -> list[str]:
        return [self.route(params).model]

    def decode_side(self, params: BaseModel) -> int | None:
        route = self.route(params)
        card = self.ctx.registry.card(route.model)
        return card.remote.image_side if route.vlm else max(card.size)

    async def run(self, images: list[DecodedImage], params: BaseModel) -> list[SkillOutput]:
        point, route = cast(PointParams, params), self.route(params)
        return await self.per_item(self._one(image, point, route) for image in images)

    async def _one(
        self, image: DecodedImage, params: PointParams, route: ObjectRoute
    ) -> PointOutput:
        if route.vlm:
            return await self._remote(image, params, route.model)
        assert route.class_id is not None  # a local route for a phrase names its class
        decode = DecodeParams(
            score_threshold=params.threshold, class_filter=frozenset({route.class_id})
        )
        detections = await self.ctx.engine.infer(route.model, DetectRequest(image, decode))
        return {"model": route.model, "points": box_centres(detections)}

    async def _remote(self, image: DecodedImage, params: PointParams, model: str) -> PointOutput:
        request = VlmRequest("point", (image,), target=params.object)
        result = await self.ctx.engine.infer(model, request)
        points: list[PointXY] = [{"x": round(x, 2), "y": round(y, 2)} for x, y in result.points]
        output: PointOutput = {"model": result.model, "points": points}
        if (usage := usage_of(result)) is not None:
            output["usage"] = usage
        return output


def box_centres(detections: Detections) -> list[PointXY]:
    return [
        {"x": round(float(x1 + x2) / 2, 2), "y": round(float(y1 + y2) / 2, 2)}
        for x1, y1, x2, y2 in detections.boxes
    ]
