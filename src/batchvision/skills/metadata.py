"""`metadata`: image size, format, file size and the EXIF facts the image really has."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from batchvision.core.types import DecodedImage
from batchvision.intake.decode import describe
from batchvision.skills.base import Skill, SkillOutput

# Metadata reads headers, so a thumbnail-scale decode is enough to validate the pixel data.
_THUMBNAIL_SIDE = 64


class MetadataParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MetadataSkill(Skill):
    name = "metadata"
    description = "Width, height, format, file size, EXIF capture time, camera make/model and GPS."
    Params = MetadataParams

    def decode_side(self, params: BaseModel) -> int | None:
        return _THUMBNAIL_SIDE

    async def run(self, images: list[DecodedImage], params: BaseModel) -> list[SkillOutput]:
        return [{**describe(image), **image.metadata} for image in images]
