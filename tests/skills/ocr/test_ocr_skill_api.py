"""The `ocr` skill over real HTTP (`/v1/analyze`) and in the pipeline: the documented output format,
parameter errors, engine choice, per-item failures, and OCR on the engine's bounded CPU pool."""

from __future__ import annotations

import asyncio
import io
import json
import threading
import unicodedata
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image, ImageDraw, ImageFont

from batchvision.core.settings import Settings
from batchvision.core.types import ImageInput, Task
from batchvision.models.ocr import OcrPage
from batchvision.models.ocr.base import OcrBlock, OcrLine, OcrWord, rect
from batchvision.pipeline import Pipeline
from conftest import EVALDATA, LiveServer, error_of

FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
RUSSIAN = ["Широкая электрификация южных", "губерний даст мощный толчок"]


def render_png(lines: list[str], size: int = 36) -> bytes:
    font = ImageFont.truetype(str(FONT), size)
    width = 40 + max(int(font.getlength(line)) for line in lines)
    image = Image.new("RGB", (width, 40 + int(size * 1.5) * len(lines)), "white")
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((20, 20 + int(size * 1.5) * i), line, fill="black", font=font)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def analyze(
    client: httpx.Client, images: list[tuple[str, bytes]], params: dict[str, Any]
) -> httpx.Response:
    files = [("images", (name, data, "application/octet-stream")) for name, data in images]
    tasks = json.dumps([{"skill": "ocr", "params": params}])
    return client.post("/v1/analyze", files=files, data={"tasks": tasks})


def ocr_of(response: httpx.Response, index: int = 0) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    result = response.json()["results"][index]
    assert result["status"] == "ok", result
    output: dict[str, Any] = result["outputs"]["ocr"]
    return output


def check_polygon(polygon: Any, width: int, height: int) -> None:
    assert len(polygon) == 4
    for x, y in polygon:
        assert isinstance(x, int) and isinstance(y, int)
        assert 0 <= x <= width and 0 <= y <= height
    (x0, y0), (x1, _), (x2, y2), (x3, _) = polygon
    assert x0 < x1 and y0 < y2 and x3 < x2  # clockwise from top-left


def check_format(output: dict[str, Any], width: int, height: int) -> list[str]:
    """Every key the format documents, and nothing else; returns the line texts."""
    assert set(output) == {"engine", "languages", "text", "pages"}
    assert output["engine"] in ("tesseract", "ppocr")
    (page,) = output["pages"]
    assert set(page) == {"width", "height", "blocks"}
    assert (page["width"], page["height"]) == (width, height)
    texts = []
    for block in page["blocks"]:
        assert set(block) == {"polygon", "confidence", "lines"}
        check_polygon(block["polygon"], width, height)
        assert 0.0 <= block["confidence"] <= 1.0
        for line in block["lines"]:
            assert set(line) == {"polygon", "text", "confidence", "words"}
            check_polygon(line["polygon"], width, height)
            assert 0.0 <= line["confidence"] <= 1.0
            texts.append(line["text"])
            for word in line["words"]:
                assert set(word) == {
                    "polygon",
                    "text",
                    "confidence",
                    "language",
                    "language_confidence",
                }
                check_polygon(word["polygon"], width, height)
                assert 0.0 <= word["confidence"] <= 1.0
                assert 0.0 <= word["language_confidence"] <= 1.0
                assert word["language"] in output["languages"]
    assert output["text"].replace("\n\n", "\n").split("\n") == (texts or [""])
    return texts


def test_russian_over_http_in_the_documented_format(live_server: LiveServer) -> None:
    png = render_png(RUSSIAN)
    width, height = Image.open(io.BytesIO(png)).size
    with live_server.client() as client:
        output = ocr_of(analyze(client, [("ru.png", png)], {"languages": ["ru"]}))
    assert output["engine"] == "tesseract"
    assert output["languages"] == ["ru"]
    assert check_format(output, width, height) == RUSSIAN
    words = [w for b in output["pages"][0]["blocks"] for ln in b["lines"] for w in ln["words"]]
    assert {w["language"] for w in words} == {"ru"}


def test_evaldata_images_over_http(live_server: LiveServer) -> None:
    photo = (EVALDATA / "ocr" / "icdar2015" / "img_8.jpg").read_bytes()
    with live_server.client() as client:
        output = ocr_of(analyze(client, [("img_8.jpg", photo)], {"languages": ["en"]}))
    # auto, English only: Tesseract finds no text in this street photo, so PP-OCR reads it.
    assert output["engine"] == "ppocr"
    check_format(output, 1280, 720)
    assert "NOTHING?" in output["text"].split()


def test_unsupported_language_is_invalid_parameter(live_server: LiveServer) -> None:
    png = render_png(["hello"])
    with live_server.client() as client:
        message = error_of(
            analyze(client, [("a.png", png)], {"languages": ["en", "xx"]}), 422, "invalid_parameter"
        )
        assert "xx" in message and "ru" in message and "uk" in message
        for bad in ({"languages": b} for b in (["english"], ["en"] * 9, "en", [""])):
            error_of(analyze(client, [("a.png", png)], bad), 422, "invalid_parameter")
        bad = {"engine": "easyocr"}
        error_of(analyze(client, [("a.png", png)], bad), 422, "invalid_parameter")
        message = error_of(
            analyze(client, [("a.png", png)], {"languages": ["ru"], "engine": "ppocr"}),
            422,
            "invalid_parameter",
        )
        assert "ppocr" in message and "zh" in message


def test_engine_parameter_is_honoured(live_server: LiveServer) -> None:
    lines = ["Batch vision server"]
    png = render_png(lines)
    with live_server.client() as client:
        for engine, expected in (
            ("tesseract", "tesseract"),
            ("ppocr", "ppocr"),
            ("auto", "tesseract"),
        ):
            params = {"languages": ["en"], "engine": engine}
            output = ocr_of(analyze(client, [("a.png", png)], params))
            assert output["engine"] == expected
            assert output["text"] == lines[0]
        detected = ocr_of(analyze(client, [("a.png", png)], {"languages": ["*"]}))
        assert (detected["engine"], detected["languages"]) == ("tesseract", ["en"])
        assert detected["text"] == lines[0]


def test_undecodable_image_fails_alone(live_server: LiveServer) -> None:
    png = render_png(RUSSIAN)
    with live_server.client() as client:
        response = analyze(
            client, [("ok.png", png), ("bad.png", b"not an image at all")], {"languages": ["ru"]}
        )
    assert response.status_code == 200, response.text
    good, bad = response.json()["results"]
    assert good["status"] == "ok"
    assert good["outputs"]["ocr"]["text"] == "\n".join(RUSSIAN)
    assert bad["status"] == "error"
    assert bad["errors"][0]["code"] == "image_decode_failed"


def test_skills_listing_shows_engines_and_languages(live_server: LiveServer) -> None:
    with live_server.client() as client:
        skills = client.get("/v1/skills").json()["skills"]
    (ocr,) = [s for s in skills if s["name"] == "ocr"]
    engines = {e["engine"]: e for e in ocr["engines"]}
    assert engines["tesseract"]["available"] and "ru" in engines["tesseract"]["languages"]
    assert engines["ppocr"]["available"] and "zh" in engines["ppocr"]["languages"]
    assert ocr["languages"]["uk"] == "Ukrainian"


def test_ocr_runs_on_the_engine_cpu_pool(tmp_path: Path) -> None:
    from conftest import make_settings

    settings: Settings = make_settings(tmp_path)
    pipeline = Pipeline(settings)
    reader: Any = pipeline.registry.model("tesseract").reader  # the instance the engine runs
    threads: list[str] = []
    real = reader.recognize

    def recording(*args: Any) -> OcrPage:
        threads.append(threading.current_thread().name)
        page: OcrPage = real(*args)
        return page

    reader.recognize = recording
    png = render_png(RUSSIAN)

    async def go() -> list[Any]:
        try:
            tasks = pipeline.prepare_tasks([Task("ocr", {"languages": ["ru"]})])
            return await pipeline.analyze([ImageInput(0, data=png), ImageInput(1, data=png)], tasks)
        finally:
            await pipeline.close()

    results = asyncio.run(go())
    assert [r.outputs["ocr"]["text"] for r in results] == ["\n".join(RUSSIAN)] * 2
    assert len(threads) == 2 and all(name.startswith("bv-cpu") for name in threads)


def test_polygons_scale_to_the_original_image() -> None:
    word = OcrWord("hi", rect(10, 20, 30, 40), 0.5, "en")
    line = OcrLine(rect(10, 20, 30, 40), "hi", [word])
    page = OcrPage("tesseract", ["en"], [OcrBlock(rect(10, 20, 30, 40), [line])])
    out = page.to_dict(200, 100, (2.0, 2.5))
    assert out["pages"][0]["blocks"][0]["lines"][0]["words"][0]["polygon"] == [
        [20, 50],
        [60, 50],
        [60, 100],
        [20, 100],
    ]


def words_of(output: dict[str, Any]) -> list[dict[str, Any]]:
    return [w for b in output["pages"][0]["blocks"] for ln in b["lines"] for w in ln["words"]]


def latin_letters(text: str) -> list[str]:
    return [ch for ch in text if ch.isalpha() and unicodedata.name(ch).startswith("LATIN")]


# Cyrillic letters with Latin look-alikes (а, е, о, р, с, у, х, к, м, т, в, н): the former
# en+ru default read "д. Александровка." as "д. AzeKCAaHTPOBKA.".
CYRILLIC_ADDRESS = ["д. Александровка, ул. Садовая", "Красноярский край, Россия"]


@pytest.mark.parametrize("params", [{}, {"languages": []}, {"languages": None}])
def test_default_detects_russian_without_latin_look_alikes(
    live_server: LiveServer, params: dict[str, Any]
) -> None:
    png = render_png(CYRILLIC_ADDRESS)
    width, height = Image.open(io.BytesIO(png)).size
    with live_server.client() as client:
        output = ocr_of(analyze(client, [("address.png", png)], params))
        star = ocr_of(analyze(client, [("address.png", png)], {"languages": ["*"]}))
    assert latin_letters(output["text"]) == []
    assert output["languages"] == ["ru"]
    assert check_format(output, width, height) == CYRILLIC_ADDRESS
    assert {w["language"] for w in words_of(output)} == {"ru"}
    assert output == star  # no languages is `["*"]`


@pytest.mark.parametrize("engine", ["auto", "tesseract"])
def test_default_detects_english(live_server: LiveServer, engine: str) -> None:
    lines = ["Please return the signed contract", "to our office by Friday"]
    png = render_png(lines)
    width, height = Image.open(io.BytesIO(png)).size
    with live_server.client() as client:
        output = ocr_of(analyze(client, [("letter.png", png)], {"engine": engine}))
    assert (output["engine"], output["languages"]) == ("tesseract", ["en"])
    assert check_format(output, width, height) == lines
    assert {w["language"] for w in words_of(output)} == {"en"}


def test_ppocr_default_labels_words_among_all_its_languages(live_server: LiveServer) -> None:
    # PP-OCR reads the same way with any language list; the default `*` labels a German word
    # German (en+zh, the former default, called every Latin word English).
    lines = ["Grüße aus München"]
    png = render_png(lines)
    with live_server.client() as client:
        output = ocr_of(analyze(client, [("de.png", png)], {"engine": "ppocr"}))
        params = {"engine": "ppocr", "languages": ["en"]}
        english = ocr_of(analyze(client, [("de.png", png)], params))
    assert output["engine"] == "ppocr"
    assert output["text"] == english["text"]
    assert "de" in output["languages"] and english["languages"] == ["en"]


@pytest.mark.parametrize(
    ("lines", "language"),
    [
        (RUSSIAN, "ru"),
        (["Ξεσκεπάζω την ψυχοφθόρα", "βδελυγία της ζωής σας"], "el"),
        (["Please return the signed contract", "to our office by Friday"], "en"),
    ],
)
def test_star_detects_the_language_over_http(
    live_server: LiveServer, lines: list[str], language: str
) -> None:
    png = render_png(lines)
    width, height = Image.open(io.BytesIO(png)).size
    with live_server.client() as client:
        output = ocr_of(analyze(client, [("page.png", png)], {"languages": ["*"]}))
    assert check_format(output, width, height) == lines
    assert output["languages"] == [language]
    words = [w for b in output["pages"][0]["blocks"] for ln in b["lines"] for w in ln["words"]]
    assert {w["language"] for w in words} == {language}
    confidences = [w["language_confidence"] for w in words]
    assert len(set(confidences)) > 1 and max(confidences) < 1.0


def test_star_with_another_code_is_invalid_parameter(live_server: LiveServer) -> None:
    png = render_png(["hello"])
    with live_server.client() as client:
        response = analyze(client, [("a.png", png)], {"languages": ["*", "en"]})
    assert "'*' must be the only entry" in error_of(response, 422, "invalid_parameter")


def test_star_with_auto_hands_photos_and_chinese_to_ppocr(live_server: LiveServer) -> None:
    photo = (EVALDATA / "ocr" / "icdar2015" / "img_8.jpg").read_bytes()
    chinese = EVALDATA / "ocr" / "multilang_lines" / "rapidocr_test_without_det.jpg"
    label = json.loads((EVALDATA / "ocr" / "labels.json").read_text())[
        "multilang_lines/rapidocr_test_without_det.jpg"
    ]["text"]
    images = [("img_8.jpg", photo), ("zh.jpg", chinese.read_bytes())]
    with live_server.client() as client:
        response = analyze(client, images, {"languages": ["*"]})
    street, line = ocr_of(response, 0), ocr_of(response, 1)
    # Tesseract finds no text in the street photo: PP-OCR reads it with `*`.
    assert (street["engine"], street["languages"]) == ("ppocr", ["en"])
    assert "NOTHING?" in street["text"].split()
    # Tesseract finds Han in the line; the auto rule prefers PP-OCR for Chinese.
    assert (line["engine"], line["languages"]) == ("ppocr", ["zh"])
    assert line["text"] == label
