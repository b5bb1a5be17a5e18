"""Tesseract and PP-OCR as registry models (cards with `task = "ocr"`).

An engine finds its own installed data (Debian's language packs, rapidocr's shipped models), so
the state a listing shows comes from the engine: installed or not, and the languages it reads here.
Engines read one page at a time and are CPU work: a batch is one image, run on the CPU pool, with
as many in flight as that pool has threads (Tesseract keeps one API object per thread).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Self

from batchvision.core.errors import BatchVisionError, ErrorCode
from batchvision.core.settings import Settings
from batchvision.core.types import RGBArray
from batchvision.models.base import Availability, Batching, Model
from batchvision.models.cards import ModelCard
from batchvision.models.files import ModelFiles
from batchvision.models.ocr.base import OcrEngine, OcrPage
from batchvision.models.ocr.ppocr import PpOcrEngine
from batchvision.models.ocr.tesseract import TesseractEngine

# For the memory budget when a card gives no memory_mb: measured RSS growth after reading one
# page on one thread (Tesseract: one en+ru API object, and one more per thread and language set;
# PP-OCR: rapidocr with its det, rec and cls sessions). `languages: ["*"]` can grow a thread's
# Tesseract objects to ~280 MB (every script's languages and OSD; see tesseract._APIS_PER_THREAD).
# The default `["*"]` grows a thread more (+144 MB on a two-line English page: OSD and the eight
# Latin packs; +164 MB after a Russian page too). The figure stays en+ru's for now: raising it
# changes when the registry evicts models, a choice left to the memory budget's owner.
_TESSERACT_MB = 32
_PPOCR_MB = 370


@dataclass(frozen=True)
class OcrRequest:
    pixels: RGBArray  # RGB uint8 HxWx3
    languages: list[str]  # validated ISO codes


class OcrModel(Model[OcrRequest, OcrRequest, OcrPage, OcrPage]):
    task = "ocr"
    runs_on = "cpu"

    def __init__(self, card: ModelCard, reader: OcrEngine) -> None:
        super().__init__(card)
        self.reader = reader

    @classmethod
    @abstractmethod
    def reader_for(cls, settings: Settings) -> OcrEngine:
        """A new engine object; cheap, since what is installed is probed once per process."""

    @classmethod
    def inspect(cls, card: ModelCard, files: ModelFiles) -> Availability:
        status = cls.reader_for(files.settings).status()
        if status.available:
            return Availability("installed", status.detail, languages=status.languages)
        error = BatchVisionError(
            ErrorCode.MODEL_UNAVAILABLE,
            f"ocr engine '{card.name}' is unavailable: {status.detail}",
        )
        return Availability("missing", status.detail, languages=(), error=error)

    @classmethod
    def load(cls, card: ModelCard, files: ModelFiles) -> Self:
        cls.inspect(card, files).require()
        return cls(card, cls.reader_for(files.settings))

    @classmethod
    def batching(cls, settings: Settings) -> Batching:
        return Batching(max_size=1, max_wait_ms=0.0, concurrency=settings.worker_threads)

    def preprocess(self, item: OcrRequest) -> OcrRequest:
        return item  # engines take the decoded RGB pixels as they are

    def predict(self, batch: list[OcrRequest]) -> Sequence[OcrPage]:
        return [self.reader.recognize(item.pixels, item.languages) for item in batch]

    def postprocess(self, raw: OcrPage, item: OcrRequest) -> OcrPage:
        return raw


class TesseractModel(OcrModel):
    family = "tesseract"

    @classmethod
    def reader_for(cls, settings: Settings) -> OcrEngine:
        return TesseractEngine()

    def memory_mb(self) -> int:
        return _TESSERACT_MB


class PpOcrModel(OcrModel):
    family = "ppocr"

    @classmethod
    def reader_for(cls, settings: Settings) -> OcrEngine:
        return PpOcrEngine(settings.ort_intra_op_threads)

    def memory_mb(self) -> int:
        return _PPOCR_MB
