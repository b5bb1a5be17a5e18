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
from batchvision.models.ocr.autodetect import osd_script, reading_score, script_languages
from batchvision.models.ocr.base import OcrLine, OcrWord, rect, settle_languages
from batchvision.models.ocr.languages import infer_language, script_share
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
    assert resolve_languages(None) == ["*"]  # the default: detect them
    assert resolve_languages([]) == ["*"]
    assert resolve_languages(["*"]) == ["*"]
    assert resolve_languages(["RU", "en", "ru"]) == ["ru", "en"]
    with pytest.raises(BatchVisionError) as info:
        resolve_languages(["*", "en"])
    assert info.value.code is ErrorCode.INVALID_PARAMETER
    with pytest.raises(BatchVisionError) as info:
        resolve_languages(["en", "xx"])
    assert info.value.code is ErrorCode.INVALID_PARAMETER
    assert "'xx'" in info.value.message and "ru" in info.value.message


def test_auto_rule_with_star_detects_with_tesseract_first() -> None:
    assert choose_engine(["*"]) == "tesseract-detect"
    assert choose_engine(["*"], "tesseract") == "tesseract"
    assert choose_engine(["*"], "ppocr") == "ppocr"


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


# --- languages: ["*"] and measured language confidence ---------------------------------------

GREEK = ["Ξεσκεπάζω την ψυχοφθόρα", "βδελυγία της ζωής σας"]
STAR_PAGES = [
    (["The quick brown fox jumps over", "the lazy dog near the river bank"], "en"),
    (["Съешь же ещё этих мягких", "французских булок, да выпей чаю"], "ru"),
    (GREEK, "el"),
]


def drop_ink(pixels: np.ndarray, share: float, seed: int = 0) -> np.ndarray:
    """The rendering with `share` of its ink pixels erased at random (a worn, patchy print)."""
    out = pixels.copy()
    ink = out.min(axis=2) < 128
    out[ink & (np.random.default_rng(seed).random(ink.shape) < share)] = 255
    return out


@pytest.mark.parametrize(("lines", "language"), STAR_PAGES)
def test_star_on_a_page_reads_with_the_script_osd_detects(lines: list[str], language: str) -> None:
    pixels, expected = render(lines)
    page = tesseract().recognize(pixels, ["*"])
    assert lines_of(page) == lines
    check_page(page, expected, min_iou=0.6)
    assert page.languages == [language]
    assert {w.language for w in words_of(page)} == {language}


@pytest.mark.parametrize(
    ("text", "language"),
    [("Hello world", "en"), ("Grüße aus Köln", "de"), ("Привет мир", "ru"), ("Αθήνα", "el")],
)
def test_star_on_a_short_line_keeps_the_best_reading_per_script(text: str, language: str) -> None:
    # OSD needs 50 characters and answers nothing here: one reading per script decides.
    pixels, _ = render([text])
    page = tesseract().recognize(pixels, ["*"])
    assert page.text == text
    assert page.languages[0] == language


def test_star_with_the_process_backend_reads_once_per_script() -> None:
    cli = TesseractEngine("cli")
    assert cli.status().available, cli.status().detail
    for text, language in (("Привет мир", "ru"), ("Hello world", "en")):
        page = cli.recognize(render([text])[0], ["*"])
        assert (page.text, page.languages) == (text, [language])


def test_star_on_evaldata_lines_in_other_scripts() -> None:
    for path, language in (
        ("multilang_lines/rapidocr_arabic.png", "fa"),
        ("multilang_lines/rapidocr_devanagari_rec.png", "hi"),
        ("multilang_lines/rapidocr_te.png", "te"),
    ):
        page = tesseract().recognize(evaldata_pixels(path).pixels, ["*"])
        assert page.languages == [language], path
        assert cer(page.text, labels()[path]["text"]) < 0.1, (path, page.text)


def test_star_on_a_blank_page_finds_no_languages() -> None:
    page = tesseract().recognize(np.full((120, 400, 3), 255, np.uint8), ["*"])
    assert page.blocks == [] and page.languages == []


def test_ppocr_star_infers_word_languages_among_all_it_reads() -> None:
    pixels, _ = render(["Alphabetum in mundo hodie"], size=40)
    page = ppocr().recognize(pixels, ["*"])
    assert page.text == "Alphabetum in mundo hodie"
    assert page.languages == ["en"]
    line = evaldata_pixels("multilang_lines/rapidocr_test_without_det.jpg")
    assert ppocr().recognize(line.pixels, ["*"]).languages == ["zh"]


def test_language_confidence_is_measured_and_lower_on_a_worn_print() -> None:
    pixels, _ = render(["Hello batch vision", "Invoice number 4711"])
    clean = [w.language_confidence for w in words_of(tesseract().recognize(pixels, ["en"]))]
    assert all(0.0 <= v <= 1.0 for v in clean) and len(set(clean)) > 1 and max(clean) < 1.0
    # A third of the ink erased, four ways (fixed seeds): words still come back, less surely.
    worn = [
        w.language_confidence
        for seed in range(4)
        for w in words_of(tesseract().recognize(drop_ink(pixels, 0.3, seed), ["en"]))
    ]
    assert len(worn) >= 3 * len(clean)
    assert all(0.0 <= v <= 1.0 for v in worn)
    assert sum(worn) / len(worn) < sum(clean) / len(clean) - 0.02
    assert min(worn) < min(clean) - 0.1


def test_language_confidence_rests_on_the_script_of_the_letters() -> None:
    def word(text: str, language: str) -> OcrWord:
        return OcrWord(text, rect(0, 0, 1, 1), 0.8, language)

    mixed = OcrLine(
        rect(0, 0, 1, 1), "", [word("Мoсквa", "ru"), word("Hello", "en"), word("7", "en")]
    )
    digits = OcrLine(rect(0, 0, 1, 1), "", [word("2024", "ru")])
    settle_languages([mixed, digits])
    moskva, hello, seven = mixed.words
    assert moskva.language_confidence == pytest.approx(0.8 * 4 / 6)  # two Latin look-alikes
    assert hello.language_confidence == pytest.approx(0.8)
    assert seven.language == "ru" and seven.language_confidence == pytest.approx(0.4)
    assert digits.words[0].language_confidence == 0.0
    assert script_share("ひらがな漢字", "ja") == 1.0 and script_share("ひらがな漢字", "zh") == 1 / 3


def test_script_detection_rules() -> None:
    assert osd_script({"script_name": "Cyrillic", "script_conf": 8.0}) == "cyrillic"
    assert osd_script({"script_name": "Japanese", "script_conf": 3.0}) == "kana"
    assert osd_script({"script_name": "Latin", "script_conf": 0.5}) is None  # unsure
    assert osd_script({"script_name": "Hebrew", "script_conf": 5.0}) is None  # nothing to read it
    assert osd_script(None) is None
    look_alikes = [("MpuBeT", 64.0), ("mup", 92.0)]  # "Привет мир" read by the Latin model
    assert reading_score(look_alikes, "cyrillic") == 0.0
    assert reading_score([("Привет", 96.0), ("мир", 96.0)], "cyrillic") == pytest.approx(0.96)
    assert script_languages(["en", "ru", "pl", "el"]) == {
        "latin": ["en", "pl"],
        "cyrillic": ["ru"],
        "greek": ["el"],
    }
