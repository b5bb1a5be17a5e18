"""`metadata`: image size, format, file size and the EXIF facts the image really has."""

from __future__ import annotations

from typing import NotRequired, TypedDict

from pydantic import BaseModel, ConfigDict

from batchvision.core.types import DecodedImage
from batchvision.intake.decode import describe
from batchvision.skills.base import Skill, SkillOutput

# Metadata reads headers, so a thumbnail-scale decode is enough to validate the pixel data.
_THUMBNAIL_SIDE = 64


class MetadataOutput(TypedDict):
    width: int
    height: int
    format: str
    file_size: int
    # From EXIF, only when the image has them.
    capture_time: NotRequired[str]  # ISO 8601, with the offset when the camera wrote one
    camera_make: NotRequired[str]
    camera_model: NotRequired[str]
    gps: NotRequired[dict[str, float]]  # latitude, longitude (degrees), altitude (m) if present


class MetadataParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MetadataSkill(Skill):
    name = "metadata"
    description = "Width, height, format, file size, EXIF capture time, camera make/model and GPS."
    Params = MetadataParams

    def decode_side(self, params: BaseModel) -> int | None:
        return _THUMBNAIL_SIDE

    async def run(self, images: list[DecodedImage], params: BaseModel) -> list[SkillOutput]:
        return [self._of(image) for image in images]

    @staticmethod
    def _of(image: DecodedImage) -> MetadataOutput:
        found: MetadataOutput = {**describe(image), **image.metadata}  # type: ignore[typeddict-item]
        return found
