"""The skill registry: every skill the server and CLI can run, by name."""

from __future__ import annotations

from batchvision.core.errors import BatchVisionError, ErrorCode, did_you_mean, echo
from batchvision.skills.animals import AnimalsSkill
from batchvision.skills.barcode import BarcodeSkill
from batchvision.skills.base import Skill, SkillContext
from batchvision.skills.caption import CaptionSkill
from batchvision.skills.detect import DetectSkill
from batchvision.skills.metadata import MetadataSkill
from batchvision.skills.ocr import OcrSkill
from batchvision.skills.point import PointSkill
from batchvision.skills.query import QuerySkill
from batchvision.skills.synthetic import SyntheticSkill

SKILL_TYPES: dict[str, type[Skill]] = {
    skill.name: skill
    for skill in (
        DetectSkill,
        MetadataSkill,
        BarcodeSkill,
        OcrSkill,
        AnimalsSkill,
        CaptionSkill,
        QuerySkill,
        PointSkill,
        SyntheticSkill,
    )
}


def build_skills(ctx: SkillContext) -> dict[str, Skill]:
    return {name: skill_type(ctx) for name, skill_type in SKILL_TYPES.items()}


def unknown_skill(name: str) -> BatchVisionError:
    known = ", ".join(sorted(SKILL_TYPES))
    hint = did_you_mean(name, SKILL_TYPES)
    return BatchVisionError(
        ErrorCode.UNKNOWN_SKILL, f"unknown skill '{echo(name)}'{hint}; available: {known}"
    )


__all__ = ["SKILL_TYPES", "Skill", "SkillContext", "build_skills", "unknown_skill"]
