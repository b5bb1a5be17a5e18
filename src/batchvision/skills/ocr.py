"""`ocr`: text as pages → blocks → lines → words, with polygons, confidences and word languages.

Engines: the registry's OCR models `tesseract` (Debian packages, in process through tesserocr) and
`ppocr` (rapidocr's shipped ONNX models), run through the engine like every model (on its bounded
CPU pool: see `models.ocr.kinds`). `engine: "auto"` picks one from the languages, or the cascade:
Tesseract, then PP-OCR when Tesseract's page is not trusted (see `batchvision.models.ocr`).

`languages: ["*"]` detects the languages (Tesseract: the page's script, then its installed
languages; PP-OCR: its model reads all its languages); the output's `languages` are then those the
words were found in, the most words first. No languages (absent, null, `[]`) means `["*"]`.
"""

from __future__ import annotations

from functools import cache
from typing import Annotated, Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from batchvision.core.errors import BatchVisionError, ErrorCode
from batchvision.core.types import DecodedImage, RGBArray
from batchvision.models.ocr import (
    AUTO,
    CASCADE,
    DETECTED,
    LANGUAGES,
    MAX_LANGUAGES,
    OcrPage,
    PpOcrEngine,
    TesseractEngine,
    auto_candidates,
    better,
    choose_engine,
    detected_follow_up,
    is_auto,
    resolve_languages,
    trusted,
)
from batchvision.models.ocr.base import OcrOutput
from batchvision.models.ocr.kinds import OcrModel, OcrRequest
from batchvision.skills.base import Skill, SkillOutput
from batchvision.skills.ocr_tiles import merge_pages
from batchvision.skills.tiles import TileGrid

# What an engine allocates beside the decoded pixels, per pixel it reads: Tesseract's bytes copy
# and 32-bit Pix of the image plus its gray and binarized ones; PP-OCR's BGR copy and detector
# input. An upper bound, so the decoded-pixel budget is not overrun.
_ENGINE_BYTES_PER_PIXEL = 12

LanguageCode = Annotated[str, StringConstraints(pattern=r"^(\*|[A-Za-z]{2,3})$")]


class OcrParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    languages: list[LanguageCode] | None = Field(
        None,
        max_length=MAX_LANGUAGES,
        description=(
            "ISO 639-1 codes of the languages to read; ['*'] detects them (the output's "
            "languages are the ones found); absent, null or empty is ['*']"
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

    def plan(self, params: OcrParams) -> tuple[str, list[str]]:
        """(engine name, ISO codes) for these parameters; raises a request-level error."""
        languages = resolve_languages(params.languages)
        engine = choose_engine(languages, params.engine)
        if params.engine == "auto":
            # The first candidate that is installed; if none is, the preferred one's error
            # (model_unavailable naming what to install) below.
            candidates = [DETECTED, "ppocr"] if is_auto(languages) else auto_candidates(languages)
            installed = [c for c in candidates if self._installed(c, languages)]
            engine = installed[0] if installed else engine
        self._require(engine, languages)
        return engine, languages

    def _require(self, engine: str, languages: list[str]) -> None:
        """Each registry model the choice runs is installed and reads `languages` here."""
        registry = self.ctx.registry
        for name in models_of(engine):
            kind = registry.kind(name)
            if not issubclass(kind, OcrModel):
                raise BatchVisionError(
                    ErrorCode.INVALID_PARAMETER, f"ocr: model '{name}' is not an ocr model"
                )
            registry.require(name)
            kind.reader_for(self.ctx.settings).require(languages)

    def _installed(self, engine: str, languages: list[str]) -> bool:
        try:
            self._require(engine, languages)
        except BatchVisionError:
            return False
        return True

    def check_params(self, params: BaseModel) -> None:
        self.plan(cast(OcrParams, params))

    def models(self, params: BaseModel) -> list[str]:
        return models_of(self.plan(cast(OcrParams, params))[0])

    def working_bytes(self, params: BaseModel, width: int, height: int) -> int:
        return TileGrid.from_settings(self.ctx.settings).tile_pixels(width, height) * (
            _ENGINE_BYTES_PER_PIXEL
        )

    async def run(self, images: list[DecodedImage], params: BaseModel) -> list[SkillOutput]:
        engine, languages = self.plan(cast(OcrParams, params))

        async def one(image: DecodedImage) -> OcrOutput:
            page = await self._read_tiled(image.pixels, engine, languages)
            return page.to_dict(image.width, image.height, image.scale)

        return await self.per_item(one(image) for image in images)

    async def _read_tiled(self, pixels: RGBArray, engine: str, languages: list[str]) -> OcrPage:
        """The whole image when it has no more pixels than one tile, else tile by tile, one at a
        time (see `ocr_tiles`)."""
        height, width = pixels.shape[:2]
        grid = TileGrid.from_settings(self.ctx.settings)
        if not grid.needed(width, height):
            return await self._read(pixels, engine, languages)
        placed = [
            (tile, await self._read(tile.of(pixels), engine, languages))
            for tile in grid.tiles(width, height)
        ]
        return merge_pages(placed, detected=engine == DETECTED or is_auto(languages))

    async def _read(self, pixels: RGBArray, engine: str, languages: list[str]) -> OcrPage:
        infer = self.ctx.engine.infer
        request = OcrRequest(pixels, languages)
        if engine == DETECTED:
            return await self._read_detected(pixels)
        if engine != CASCADE:
            page: OcrPage = await infer(engine, request)
            return page
        first: OcrPage = await infer("tesseract", request)
        if trusted(first):
            return first
        try:
            fallback: OcrPage = await infer("ppocr", request)
        except BatchVisionError:
            return first  # Tesseract's reading stands when PP-OCR cannot take the image
        return better(first, fallback)

    async def _read_detected(self, pixels: RGBArray) -> OcrPage:
        """Tesseract detects and reads; PP-OCR reads again where the auto rule prefers it."""
        page: OcrPage = await self.ctx.engine.infer("tesseract", OcrRequest(pixels, [AUTO]))
        follow_up = detected_follow_up(page)
        if follow_up is None or not self._installed("ppocr", follow_up):
            return page
        try:
            fallback: OcrPage = await self.ctx.engine.infer("ppocr", OcrRequest(pixels, follow_up))
        except BatchVisionError:
            return page  # Tesseract's reading stands when PP-OCR cannot take the image
        return better(page, fallback)

    @classmethod
    def describe(cls) -> dict[str, Any]:
        return {**super().describe(), **ocr_capabilities()}


def models_of(engine: str) -> list[str]:
    """The registry models an engine choice runs: the cascade runs both."""
    if engine == CASCADE:
        return ["tesseract", "ppocr"]
    # `*` with auto needs Tesseract; PP-OCR reads again only if it is installed
    return ["tesseract"] if engine == DETECTED else [engine]


@cache
def ocr_capabilities() -> dict[str, Any]:
    """Which engines and languages this installation has (for `GET /v1/skills`)."""
    statuses = [TesseractEngine().status(), PpOcrEngine().status()]
    return {
        "languages": {code: lang.name for code, lang in LANGUAGES.items()},
        "engines": [status.to_dict() for status in statuses],
    }
