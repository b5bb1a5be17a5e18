"""Tesseract and PP-OCR as registry models: their state comes from the engine (installed or not,
which languages it reads here), and they run pages through the model contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from batchvision.core.errors import BatchVisionError, ErrorCode
from batchvision.core.settings import Settings
from batchvision.models.kinds import KINDS
from batchvision.models.ocr.base import OcrEngine
from batchvision.models.ocr.kinds import OcrRequest, PpOcrModel, TesseractModel
from batchvision.models.ocr.tesseract import TesseractEngine
from batchvision.models.registry import ModelRegistry
from conftest import MODELS


def registry_of(**kinds: type) -> ModelRegistry:
    settings = Settings(model_dirs=[MODELS], ort_intra_op_threads=1)
    return ModelRegistry(settings, kinds={**KINDS, **{("ocr", k): v for k, v in kinds.items()}})


def test_the_shipped_ocr_cards_load_as_their_engines() -> None:
    registry = registry_of()
    assert isinstance(registry.model("tesseract"), TesseractModel)
    ppocr = registry.model("ppocr")
    assert isinstance(ppocr, PpOcrModel)
    blank = np.full((80, 200, 3), 255, np.uint8)
    (page,) = ppocr.run_batch([ppocr.preprocess(OcrRequest(blank, ["en"]))])
    assert (page.engine, page.blocks) == ("ppocr", [])


def test_tesseract_without_language_data_is_listed_missing_with_the_install_hint(
    tmp_path: Path,
) -> None:
    class TesseractWithoutData(TesseractModel):
        @classmethod
        def reader_for(cls, settings: Settings) -> OcrEngine:
            return TesseractEngine(tessdata=tmp_path)  # an empty tessdata folder

    registry = registry_of(tesseract=TesseractWithoutData)
    status = registry.status(registry.card("tesseract"))
    assert (status.state, status.found.languages) == ("missing", ())
    assert "apt-get install tesseract-ocr" in status.found.detail
    assert status.to_dict()["languages"] == []
    for call in (registry.require, registry.model):
        with pytest.raises(BatchVisionError) as caught:
            call("tesseract")
        assert caught.value.code is ErrorCode.MODEL_UNAVAILABLE
        assert "ocr engine 'tesseract' is unavailable" in caught.value.message
