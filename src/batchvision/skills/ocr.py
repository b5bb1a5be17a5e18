"""`ocr`: text as pages → blocks → lines → words, with polygons, confidences and word languages.

Engines: Tesseract (Debian packages, in process through tesserocr) and PP-OCR (rapidocr's shipped
ONNX models); `engine: "auto"` picks one from the languages (see `batchvision.models.ocr`). All
recognition runs on the engine's bounded CPU pool.
"""

from __future__ import annotations

from functools import cache
from typing import Annotated, Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from batchvision.core.errors import BatchVisionError
from batchvision.core.types import DecodedImage
from batchvision.models.ocr import (
    LANGUAGES,
    MAX_LANGUAGES,
    OcrEngines,
    auto_candidates,
    choose_engine,
    default_languages,
    resolve_languages,
)
from batchvision.skills.base import Skill, SkillOutput

LanguageCode = Annotated[str, StringConstraints(pattern=r"^(\*|[A-Za-z]{2,3})$")]


class OcrParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    languages: list[LanguageCode] | None = Field(
        None,
        max_length=MAX_LANGUAGES,
        description=(
            "ISO 639-1 codes of the languages to read; ['*'] or empty for the default set "
            "(en, ru; en, zh with engine ppocr)"
        ),
    )
    engine: Literal["auto", "tesseract", "ppocr"] = Field(
        "auto", description="OCR engine; auto picks by language"
    )


class OcrSkill(Skill):
    name = "ocr"
    description = (
        "Text recognition: pages, blocks, lines and words with polygons, confidences and the "
        "language of each word (Tesseract or PP-OCR)."
    )
    Params = OcrParams

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.engines = OcrEngines(ppocr_threads=self.ctx.settings.ort_intra_op_threads)

    def plan(self, params: OcrParams) -> tuple[str, list[str]]:
        """(engine name, ISO codes) for these parameters; raises a request-level error."""
        languages = resolve_languages(params.languages, default_languages(params.engine))
        engine = choose_engine(languages, params.engine)
        if params.engine == "auto":
            # The first candidate that is installed; if none is, the preferred one's error
            # (model_unavailable naming what to install) below.
            installed = [c for c in auto_candidates(languages) if self._installed(c, languages)]
            engine = installed[0] if installed else engine
        self.engines.get(engine).require(languages)
        return engine, languages

    def _installed(self, engine: str, languages: list[str]) -> bool:
        try:
            self.engines.get(engine).require(languages)
        except BatchVisionError:
            return False
        return True

    def check_params(self, params: BaseModel) -> None:
        self.plan(cast(OcrParams, params))

    async def run(self, images: list[DecodedImage], params: BaseModel) -> list[SkillOutput]:
        engine_name, languages = self.plan(cast(OcrParams, params))
        engine = self.engines.get(engine_name)
        run_cpu = self.ctx.engine.run_cpu

        async def one(image: DecodedImage) -> dict[str, Any]:
            page = await run_cpu(engine.recognize, image.pixels, languages)
            return page.to_dict(image.width, image.height, image.scale)

        return await self.per_item(one(image) for image in images)

    @classmethod
    def describe(cls) -> dict[str, Any]:
        return {**super().describe(), **ocr_capabilities()}


@cache
def ocr_capabilities() -> dict[str, Any]:
    """Which engines and languages this installation has (for `GET /v1/skills`)."""
    statuses = OcrEngines().statuses()
    return {
        "languages": {code: lang.name for code, lang in LANGUAGES.items()},
        "engines": [status.to_dict() for status in statuses],
    }
