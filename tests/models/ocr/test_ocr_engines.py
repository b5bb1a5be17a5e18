"""Real OCR with both engines: rendered Latin and Cyrillic text read back, boxes around the
rendered words, per-word languages, and real evaldata images."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from batchvision.core.errors import BatchVisionError, ErrorCode
from batchvision.intake.decode import decode_image
from batchvision.models.ocr import (
    LANGUAGES,
    PPOCR_LANGUAGES,
    CascadeEngine,
    OcrPage,
    PpOcrEngine,
    TesseractEngine,
    choose_engine,
    resolve_languages,
)
from batchvision.models.ocr.languages import infer_language
from batchvision.models.ocr.tesseract import visual_to_logical
from conftest import EVALDATA, bench_module

FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
OCR_DATA = EVALDATA / "ocr"


@cache
def tesseract() -> TesseractEngine:
    return TesseractEngine()


@cache
def ppocr() -> PpOcrEngine:
    return PpOcrEngine(intra_threads=2)


@cache
def labels() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((OCR_DATA / "labels.json").read_text())
    return data


def render(lines: list[str], size: int = 36) -> tuple[np.ndarray, list[tuple[str, tuple]]]:
    """Black text on white; returns the pixels and each word's exact ink box."""
    font = ImageFont.truetype(str(FONT), size)
    width = 40 + max(int(font.getlength(line)) for line in lines)
    image = Image.new("RGB", (width, 40 + int(size * 1.8) * len(lines)), "white")
    draw = ImageDraw.Draw(image)
    boxes: list[tuple[str, tuple]] = []
    for i, line in enumerate(lines):
        y = 20 + int(size * 1.8) * i
        draw.text((20, y), line, fill="black", font=font)
        x = 20.0
        for word in line.split(" "):
            boxes.append((word, draw.textbbox((x, y), word, font=font)))
            x += font.getlength(word + " ")
    return np.asarray(image), boxes


def lines_of(page: OcrPage) -> list[str]:
    return [line.text for block in page.blocks for line in block.lines]


def words_of(page: OcrPage) -> list[Any]:
    return [w for block in page.blocks for line in block.lines for w in line.words]


def box_iou(polygon: Any, box: tuple) -> float:
    xs = [p[0] for p in polygon]
    ys = [p[1] for p in polygon]
    ax1, ay1, ax2, ay2 = min(xs), min(ys), max(xs), max(ys)
    bx1, by1, bx2, by2 = box
    iw = max(0.0, min(ax2, bx2) - max(ax1, bx1))
    ih = max(0.0, min(ay2, by2) - max(ay1, by1))
    inter = iw * ih
    return inter / ((ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter)


def check_page(page: OcrPage, expected: list[tuple[str, tuple]], min_iou: float) -> None:
    words = words_of(page)
    assert [w.text for w in words] == [text for text, _ in expected]
    for word, (_, box) in zip(words, expected, strict=True):
        assert 0.0 <= word.confidence <= 1.0
        assert box_iou(word.polygon, box) >= min_iou, (word.text, word.polygon, box)


def cer(predicted: str, reference: str) -> float:
    """Character error rate, computed as bench/eval_ocr.py computes the README figures."""
    evaluation = bench_module("eval_ocr")
    reference = evaluation.norm(reference)
    return float(evaluation.levenshtein(evaluation.norm(predicted), reference)) / len(reference)


def evaldata_pixels(path: str) -> Any:
    return decode_image((OCR_DATA / path).read_bytes(), max_pixels=64_000_000)


# --- Tesseract ---------------------------------------------------------------------------------


def test_tesseract_reads_rendered_latin_exactly_with_boxes_around_words() -> None:
    lines = ["The quick brown fox jumps", "over the lazy dog 1234"]
    pixels, expected = render(lines)
    page = tesseract().recognize(pixels, ["en"])
    assert lines_of(page) == lines
    check_page(page, expected, min_iou=0.6)
    assert {w.language for w in words_of(page)} == {"en"}


def test_tesseract_reads_rendered_cyrillic_exactly() -> None:
    lines = ["Съешь же ещё этих мягких", "французских булок, да выпей чаю"]
    pixels, expected = render(lines)
    page = tesseract().recognize(pixels, ["ru"])
    assert lines_of(page) == lines
    check_page(page, expected, min_iou=0.6)
    assert {w.language for w in words_of(page)} == {"ru"}


def test_tesseract_word_language_in_a_mixed_english_russian_line() -> None:
    pixels, _ = render(["Hello world привет мир"])
    page = tesseract().recognize(pixels, ["en", "ru"])
    words = words_of(page)
    assert [(w.text, w.language) for w in words] == [
        ("Hello", "en"),
        ("world", "en"),
        ("привет", "ru"),
        ("мир", "ru"),
    ]


def test_tesseract_process_backend_reads_the_same() -> None:
    cli = TesseractEngine("cli")
    if not cli.status().available:
        pytest.skip(cli.status().detail)
    lines = ["Grüße aus Köln", "Привет из Москвы"]
    pixels, expected = render(lines)
    page = cli.recognize(pixels, ["de", "ru"])
    assert lines_of(page) == lines
    check_page(page, expected, min_iou=0.6)
    assert [w.language for w in words_of(page)] == ["de", "de", "de", "ru", "ru", "ru"]


def test_tesseract_russian_scanned_lines_from_evaldata() -> None:
    scanned = sorted(
        p for p, v in labels().items() if v["kind"].startswith("scanned") and len(v["text"]) > 40
    )[:5]
    for path in scanned:
        page = tesseract().recognize(evaldata_pixels(path).pixels, ["ru"])
        assert cer(page.text, labels()[path]["text"]) < 0.25, (path, page.text)


def test_tesseract_right_to_left_words_in_reading_order() -> None:
    image = evaldata_pixels("multilang_lines/rapidocr_arabic.png")
    page = tesseract().recognize(image.pixels, ["fa"])
    assert page.text == "امروز هوا خوبه."
    assert visual_to_logical("12زورما") == "امروز12"


def test_tesseract_missing_language_data_is_model_unavailable(tmp_path: Path) -> None:
    empty = TesseractEngine(tessdata=tmp_path)
    assert not empty.status().available
    with pytest.raises(BatchVisionError) as info:
        empty.require(["en"])
    assert info.value.code is ErrorCode.MODEL_UNAVAILABLE
    assert "tesseract-ocr" in info.value.message

    tessdata = tmp_path / "tessdata"
    tessdata.mkdir()
    english = Path(tesseract()._setup[2] or "") / "eng.traineddata"
    (tessdata / "eng.traineddata").symlink_to(english)
    only_english = TesseractEngine(tessdata=tessdata)
    assert only_english.status().languages == ("en",)
    with pytest.raises(BatchVisionError) as info:
        only_english.require(["en", "ru"])
    assert info.value.code is ErrorCode.MODEL_UNAVAILABLE
    assert "tesseract-ocr-rus" in info.value.message


# --- PP-OCR ------------------------------------------------------------------------------------


def test_ppocr_reads_rendered_latin_with_word_boxes() -> None:
    lines = ["Alphabetum in mundo hodie"]
    pixels, expected = render(lines, size=40)
    page = ppocr().recognize(pixels, ["en", "de"])
    assert page.engine == "ppocr"
    assert page.text == lines[0]
    # PP-OCR's boxes are padded around the ink (the detector's unclip), hence the lower bar.
    check_page(page, expected, min_iou=0.4)
    assert {w.language for w in words_of(page)} == {"en"}


def test_ppocr_reads_scene_text_and_chinese_from_evaldata() -> None:
    photo = evaldata_pixels("icdar2015/img_8.jpg")
    page = ppocr().recognize(photo.pixels, ["en"])
    assert "NOTHING?" in page.text.split()
    line = evaldata_pixels("multilang_lines/rapidocr_test_without_det.jpg")
    page = ppocr().recognize(line.pixels, ["zh", "en"])
    assert page.text == labels()["multilang_lines/rapidocr_test_without_det.jpg"]["text"]
    assert {w.language for w in words_of(page)} == {"zh"}


def test_ppocr_blank_image_has_no_text() -> None:
    page = ppocr().recognize(np.full((200, 300, 3), 255, np.uint8), ["en"])
    assert page.blocks == []
    assert page.text == ""


def test_an_image_ppocr_cannot_take_is_a_clear_error_and_auto_keeps_tesseract() -> None:
    strip = np.full((5, 3000, 3), 255, np.uint8)
    with pytest.raises(BatchVisionError) as info:
        ppocr().recognize(strip, ["en"])
    assert info.value.code is ErrorCode.PROCESSING_ERROR
    assert "5" in info.value.message and "3000" in info.value.message
    assert CascadeEngine(tesseract(), ppocr()).recognize(strip, ["en"]).engine == "tesseract"


# --- languages and the engine rule -------------------------------------------------------------


def test_languages_resolve_and_reject() -> None:
    assert resolve_languages(None) == ["en", "ru"]
    assert resolve_languages(["*"]) == ["en", "ru"]
    assert resolve_languages(["RU", "en", "ru"]) == ["ru", "en"]
    with pytest.raises(BatchVisionError) as info:
        resolve_languages(["en", "xx"])
    assert info.value.code is ErrorCode.INVALID_PARAMETER
    assert "'xx'" in info.value.message and "ru" in info.value.message


def test_auto_rule() -> None:
    assert choose_engine(["en"]) == "tesseract+ppocr"
    assert choose_engine(["de", "fr"]) == "tesseract+ppocr"
    assert choose_engine(["zh", "en"]) == "ppocr"
    assert choose_engine(["en", "ru"]) == "tesseract"
    assert choose_engine(["el"]) == "tesseract"
    assert choose_engine(["en"], "tesseract") == "tesseract"
    with pytest.raises(BatchVisionError) as info:
        choose_engine(["ru"], "ppocr")
    assert info.value.code is ErrorCode.INVALID_PARAMETER
    assert set(LANGUAGES) >= PPOCR_LANGUAGES


def test_cascade_keeps_confident_tesseract_pages_and_falls_back_on_photos() -> None:
    cascade = CascadeEngine(tesseract(), ppocr())
    pixels, _ = render(["Invoice number 4711"])
    assert cascade.recognize(pixels, ["en"]).engine == "tesseract"
    photo = evaldata_pixels("icdar2015/img_8.jpg").pixels
    assert tesseract().recognize(photo, ["en"]).blocks == []
    page = cascade.recognize(photo, ["en"])
    assert page.engine == "ppocr"
    assert "NOTHING?" in page.text.split()


def test_language_inference_by_script() -> None:
    assert infer_language("Привет", ["en", "ru"]) == "ru"
    assert infer_language("Hello", ["ru", "en"]) == "en"
    assert infer_language("їжак", ["ru", "uk"]) == "uk"
    assert infer_language("Straße", ["en", "de"]) == "de"
    assert infer_language("1234", ["en", "ru"], fallback="ru") == "ru"
    assert infer_language("ひらがな", ["zh", "ja"]) == "ja"
    assert infer_language("中国", ["en", "zh"]) == "zh"
