"""OCR engines (Tesseract, PP-OCR) behind one interface, and the rule that picks one per request.

`auto_candidates` implements `engine: "auto"`, backed by `bench/eval_ocr.py` (figures in the
README's "OCR" section):

- a language PP-OCR cannot read (Cyrillic, Greek, Korean, Arabic, Indic scripts) → Tesseract,
  which reads every requested language at once. PP-OCR's model has no Cyrillic: CER 93% on the
  Russian lines against Tesseract's 5%.
- Chinese or Japanese, with only languages PP-OCR reads → PP-OCR (Chinese lines CER 22% vs 72%).
- Latin-script languages only → Tesseract first, PP-OCR when Tesseract finds no words or their
  mean confidence is under 0.5 (`trusted`, `better`; the `ocr` skill runs the two registry models
  that way, `CascadeEngine` does the same with two engine objects for the benchmarks). Tesseract
  is exact on clean rendered text where PP-OCR makes 1.5% character errors on rendered lines, and
  is tens of times faster; but its automatic page layout finds nothing in scene photos (ICDAR 2015
  words F1 0%), where PP-OCR reaches 48%.

When the engine a rule picks is not installed, the next one that can read the languages is used.

`languages: ["*"]`, which is also what no languages means for every engine, with `auto` is
`DETECTED`: Tesseract detects the script and reads the page
(it is the engine that reads every script), then the rule above runs on the languages it found:
Chinese or Japanese, or a Latin page it is unsure of, is read again by PP-OCR with those
languages; a page where Tesseract found no text at all is read by PP-OCR with `*`. With
`ppocr`, `*` reads the same pixels with the same model as any language list (the model reads all
its languages at once); it only labels each word among all of them, so a kana line is Japanese
and "Grüße" German, where the former en+zh default called them Chinese and English.
"""

from __future__ import annotations

from typing import Literal

from batchvision.core.errors import BatchVisionError, ErrorCode
from batchvision.core.types import RGBArray
from batchvision.models.ocr.base import EngineStatus, OcrEngine, OcrPage
from batchvision.models.ocr.languages import (
    AUTO,
    DEFAULT_LANGUAGES,
    LANGUAGES,
    MAX_LANGUAGES,
    PPOCR_LANGUAGES,
    is_auto,
    resolve_languages,
)
from batchvision.models.ocr.ppocr import PpOcrEngine
from batchvision.models.ocr.tesseract import TesseractEngine

EngineName = Literal["auto", "tesseract", "ppocr"]
CASCADE = "tesseract+ppocr"
DETECTED = "tesseract-detect"

# Below this mean word confidence (or with no words) Tesseract's page is not trusted for Latin
# text and PP-OCR reads the image instead.
CASCADE_MIN_CONFIDENCE = 0.5

CJK_LANGUAGES: frozenset[str] = frozenset({"zh", "ja"})

SUPPORTED: dict[str, frozenset[str]] = {
    "tesseract": frozenset(LANGUAGES),
    "ppocr": PPOCR_LANGUAGES,
    CASCADE: PPOCR_LANGUAGES - CJK_LANGUAGES,
}


def auto_candidates(languages: list[str]) -> list[str]:
    """Engines for `auto`, best first (see the module docstring)."""
    wanted = set(languages)
    if not wanted <= PPOCR_LANGUAGES:
        return ["tesseract"]
    if wanted & CJK_LANGUAGES:
        return ["ppocr", "tesseract"]
    return [CASCADE, "tesseract", "ppocr"]


def choose_engine(languages: list[str], engine: EngineName = "auto") -> str:
    """The preferred engine for validated ISO codes; invalid_parameter if it can't read one."""
    if is_auto(languages):
        return DETECTED if engine == "auto" else engine
    if engine == "auto":
        return auto_candidates(languages)[0]
    unsupported = [code for code in languages if code not in SUPPORTED[engine]]
    if unsupported:
        raise BatchVisionError(
            ErrorCode.INVALID_PARAMETER,
            f"ocr: engine '{engine}' does not read {unsupported}; "
            f"it supports: {', '.join(sorted(SUPPORTED[engine]))}",
        )
    return engine


class CascadeEngine(OcrEngine):
    """Read with `first`; when it finds no words or is unsure of them, read with `second`.
    The page says which engine produced it."""

    name = CASCADE

    def __init__(
        self, first: OcrEngine, second: OcrEngine, min_confidence: float = CASCADE_MIN_CONFIDENCE
    ) -> None:
        self.first = first
        self.second = second
        self.min_confidence = min_confidence

    def status(self) -> EngineStatus:
        a, b = self.first.status(), self.second.status()
        languages = tuple(code for code in a.languages if code in b.languages)
        return EngineStatus(
            self.name, a.available and b.available, f"{a.detail}; {b.detail}", languages
        )

    def require(self, languages: list[str]) -> None:
        self.first.require(languages)
        self.second.require(languages)

    def recognize(self, pixels: RGBArray, languages: list[str]) -> OcrPage:
        page = self.first.recognize(pixels, languages)
        if trusted(page, self.min_confidence):
            return page
        try:
            fallback = self.second.recognize(pixels, languages)
        except BatchVisionError:
            return page  # the first engine's reading stands when the second cannot run
        return better(page, fallback)


def confidence(page: OcrPage) -> float:
    """Mean word confidence of a page; 0 without words."""
    values = [w.confidence for b in page.blocks for line in b.lines for w in line.words]
    return sum(values) / len(values) if values else 0.0


def trusted(page: OcrPage, min_confidence: float = CASCADE_MIN_CONFIDENCE) -> bool:
    """Whether the cascade keeps the first engine's page without reading the image again."""
    return confidence(page) >= min_confidence


def detected_follow_up(page: OcrPage) -> list[str] | None:
    """The languages PP-OCR reads a `DETECTED` page again with, or None to keep Tesseract's."""
    if not page.blocks:
        return [AUTO]
    preferred = auto_candidates(page.languages)[0]
    if preferred == "ppocr" or (preferred == CASCADE and not trusted(page)):
        return list(page.languages)
    return None


def better(page: OcrPage, fallback: OcrPage) -> OcrPage:
    """The second engine's page, unless it found nothing where the first found something."""
    return fallback if fallback.blocks or not page.blocks else page


__all__ = [
    "AUTO",
    "CASCADE",
    "DEFAULT_LANGUAGES",
    "DETECTED",
    "LANGUAGES",
    "MAX_LANGUAGES",
    "PPOCR_LANGUAGES",
    "SUPPORTED",
    "CascadeEngine",
    "EngineName",
    "EngineStatus",
    "OcrEngine",
    "OcrPage",
    "PpOcrEngine",
    "TesseractEngine",
    "auto_candidates",
    "better",
    "choose_engine",
    "detected_follow_up",
    "is_auto",
    "resolve_languages",
    "trusted",
]
