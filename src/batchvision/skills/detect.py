"""`detect`: COCO-style object detection with any detector the registry holds, and
open-vocabulary detection (`object`: any phrase) by a vision-language backend.

Who answers follows the rule in `skills.vlm` (`route_object`). Boxes from a VLM carry the
phrase as `label`, `class_id` -1 (no class of a label set) and `score` 1.0 (VLMs report no
confidence), so every consumer reads one DetectOutput shape.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict, cast

from pydantic import BaseModel, ConfigDict, Field

from batchvision.core.errors import BatchVisionError, ErrorCode, did_you_mean, echo
from batchvision.core.types import DecodedImage
from batchvision.models.cards import ModelCard
from batchvision.models.decoders import DecodeParams, Detections
from batchvision.models.detector import DetectRequest
from batchvision.models.vlm.calls import VlmRequest, VlmResult
from batchvision.skills.base import Skill, SkillOutput
from batchvision.skills.vlm import ObjectPhrase, ObjectRoute, UsageOutput, route_object, usage_of

DEFAULT_DETECT_MODEL = "yolox-nano"


class DetectParams(BaseModel):
    # Strict: `"threshold": true` or `"0.5"` is a client mistake to report, not to coerce.
    model_config = ConfigDict(extra="forbid", strict=True)

    model: str = Field(DEFAULT_DETECT_MODEL, description="a detect or vlm model card name")
    object: ObjectPhrase | None = Field(
        None, description="an object phrase: a detector class runs locally, others on the VLM"
    )
    threshold: float = Field(0.25, ge=0.0, le=1.0, description="minimum score")
    classes: list[str] | None = Field(
        None, min_length=1, max_length=100, description="keep only these class names"
    )
    max_detections: int = Field(100, ge=1, le=1000)
    nms_iou: float = Field(0.45, gt=0.0, le=1.0, description="IoU for class-aware NMS")


class DetectSkill(Skill):
    name = "detect"
    description = "Object detection: boxes in pixels and normalised, with class name and score."
    Params = DetectParams

    def route(self, params: BaseModel) -> ObjectRoute:
        detect = cast(DetectParams, params)
        return route_object(self.ctx.registry, detect.model, detect.object, self.name)

    def check_params(self, params: BaseModel) -> None:
        detect = cast(DetectParams, params)
        if detect.object is not None and detect.classes is not None:
            raise BatchVisionError(
                ErrorCode.INVALID_PARAMETER, "detect: give 'object' or 'classes', not both"
            )
        if not self.route(detect).vlm:
            self._class_filter(detect)

    def models(self, params: BaseModel) -> list[str]:
        return [self.route(params).model]

    def decode_side(self, params: BaseModel) -> int | None:
        route = self.route(params)
        card = self.ctx.registry.card(route.model)
        return card.remote.image_side if route.vlm else max(card.size)

    def _class_filter(self, params: DetectParams) -> frozenset[int] | None:
        route = self.route(params)
        if route.class_id is not None:
            return frozenset({route.class_id})
        if params.classes is None:
            return None
        names = self.ctx.registry.card(params.model).class_names()
        index = {name.lower(): i for i, name in enumerate(names)}
        unknown = [c for c in params.classes if c.strip().lower() not in index]
        if unknown:
            hints = did_you_mean(unknown, names)
            raise BatchVisionError(
                ErrorCode.INVALID_PARAMETER,
                f"detect: unknown classes {echo(unknown)} for model '{params.model}'{hints}",
            )
        return frozenset(index[c.strip().lower()] for c in params.classes)

    async def run(self, images: list[DecodedImage], params: BaseModel) -> list[SkillOutput]:
        detect, route = cast(DetectParams, params), self.route(params)
        if route.vlm:
            assert detect.object is not None  # route_object requires it for a VLM
            phrase = detect.object
            return await self.per_item(self._remote(i, route.model, phrase) for i in images)
        decode = DecodeParams(
            score_threshold=detect.threshold,
            nms_iou=detect.nms_iou,
            max_detections=detect.max_detections,
            class_filter=self._class_filter(detect),
        )
        card = self.ctx.registry.card(detect.model)
        names = card.class_names()
        return await self.per_item(self._one(image, card, names, decode) for image in images)

    async def _one(
        self, image: DecodedImage, card: ModelCard, names: list[str], decode: DecodeParams
    ) -> DetectOutput:
        detections = await self.ctx.engine.infer(card.name, DetectRequest(image, decode))
        return format_detections(detections, names, image, card.name)

    async def _remote(self, image: DecodedImage, model: str, phrase: str) -> DetectOutput:
        request = VlmRequest("detect", (image,), target=phrase)
        return vlm_detections(await self.ctx.engine.infer(model, request), phrase)


class DetectedObject(TypedDict):
    class_id: int
    label: str
    score: float
    box: list[float]  # x1, y1, x2, y2 in pixels of the original image


class DetectOutput(TypedDict):
    model: str
    objects: list[DetectedObject]
    usage: NotRequired[UsageOutput]  # tokens a VLM backend reported


VLM_CLASS_ID = -1  # a VLM's box names a phrase, not a class of a label set
VLM_SCORE = 1.0  # VLMs give no confidence: every box they return is one they asserted


def vlm_detections(result: VlmResult, phrase: str) -> DetectOutput:
    objects: list[DetectedObject] = [
        {
            "class_id": VLM_CLASS_ID,
            "label": phrase,
            "score": VLM_SCORE,
            "box": [round(v, 2) for v in box],
        }
        for box in result.boxes
    ]
    output: DetectOutput = {"model": result.model, "objects": objects}
    if (usage := usage_of(result)) is not None:
        output["usage"] = usage
    return output


def format_detections(
    dets: Detections, class_names: list[str], image: DecodedImage, model: str
) -> DetectOutput:
    """Boxes stay in pixels here; each surface converts them to its own convention."""
    objects: list[DetectedObject] = []
    for box, score, class_id in zip(dets.boxes, dets.scores, dets.class_ids, strict=True):
        x1, y1, x2, y2 = (float(v) for v in box)
        objects.append(
            {
                "class_id": int(class_id),
                "label": class_names[int(class_id)],
                "score": round(float(score), 4),
                "box": [round(x1, 2), round(y1, 2), round(x2, 2), round(y2, 2)],
            }
        )
    return {"model": model, "objects": objects}
