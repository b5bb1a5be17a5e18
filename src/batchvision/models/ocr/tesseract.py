"""Tesseract OCR: in process through `tesserocr`, or one `tesseract` process per image.

Language data comes from Debian's `tesseract-ocr-<lang>` packages (found under `$TESSDATA_PREFIX`
or the usual system folders). The in-process backend (`api`, the default when `tesserocr`
imports) keeps one `PyTessBaseAPI` per worker thread and language set, since a Tesseract API object
must not be shared between threads; it reports the language that recognised each word. The
process backend (`cli`) runs `tesseract stdin stdout tsv` and infers each word's language from its
script (see `languages.infer_language`). Both use page segmentation mode 3 (automatic layout) and
the LSTM recogniser, and return Tesseract's own blocks, lines and words.

`languages: ["*"]` detects the script (`autodetect`: OSD when `osd.traineddata` is installed and
the backend is `api`, else, or when OSD has no answer, one reading per script, the best kept) and
reads with that script's installed languages; the page reports the languages its words are in.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
import threading
import unicodedata
from collections import OrderedDict
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal, cast

from PIL import Image

from batchvision.core.errors import BatchVisionError, ErrorCode
from batchvision.core.types import RGBArray
from batchvision.models.ocr.autodetect import osd_script, reading_score, script_languages
from batchvision.models.ocr.base import (
    EngineStatus,
    OcrBlock,
    OcrEngine,
    OcrLine,
    OcrPage,
    OcrWord,
    bounding_polygon,
    join_words,
    rect,
    settle_languages,
)
from batchvision.models.ocr.languages import (
    LANGUAGES,
    from_tesseract,
    infer_language,
    is_auto,
    tesseract_code,
)

Backend = Literal["auto", "api", "cli"]

TESSDATA_DIRS = (
    "/usr/share/tesseract-ocr/5/tessdata",
    "/usr/share/tesseract-ocr/4.00/tessdata",
    "/usr/share/tessdata",
    "/usr/local/share/tessdata",
    "/opt/homebrew/share/tessdata",
)
INSTALL_HINT = (
    "install Debian's tesseract-ocr and tesseract-ocr-<lang> packages "
    "(e.g. apt-get install tesseract-ocr tesseract-ocr-eng tesseract-ocr-rus)"
)
# API objects kept per worker thread (one per language set); the oldest is closed beyond this.
# `*` may use nine script sets and OSD: measured RSS growth with all ten loaded in one thread is
# ~280 MB (the eight Latin packs ~95 MB of it), against ~25 MB for one en+ru object.
_APIS_PER_THREAD = 14
OSD = "osd"
_CLI_TIMEOUT_S = 300


def find_tessdata() -> Path | None:
    candidates: list[Path] = []
    prefix = os.environ.get("TESSDATA_PREFIX")
    if prefix:
        candidates += [Path(prefix), Path(prefix) / "tessdata"]
    candidates += [Path(p) for p in TESSDATA_DIRS]
    for folder in candidates:
        if folder.is_dir() and any(folder.glob("*.traineddata")):
            return folder
    return None


@dataclass(frozen=True)
class _Word:
    block: int
    line: int
    box: tuple[int, int, int, int]  # x1, y1, x2, y2
    text: str
    confidence: float  # 0-100, as Tesseract reports it
    language: str | None  # Tesseract language name, when the backend can say


Setup = tuple[EngineStatus, Literal["api", "cli"] | None, Path | None]


def _missing(why: str) -> Setup:
    return EngineStatus("tesseract", False, f"{why}: {INSTALL_HINT}", ()), None, None


def _backend(requested: Backend) -> tuple[Literal["api", "cli"] | None, str, str | None]:
    """(backend, version, what is missing) for the requested backend."""
    if requested in ("auto", "api"):
        try:
            import tesserocr

            return "api", tesserocr.tesseract_version().splitlines()[0], None
        except ImportError:
            if requested == "api":
                return None, "", "the tesserocr package is not installed"
    binary = shutil.which("tesseract")
    if binary is None:
        return None, "", "the tesseract program is not installed"
    return "cli", _cli_version(binary), None


@cache
def probe(requested: Backend, tessdata: Path | None) -> Setup:
    """What is installed, looked up once per process: packages do not change under a server,
    and the OCR skill checks this on every request."""
    backend, version, missing = _backend(requested)
    if missing is not None:
        return _missing(missing)
    folder = tessdata or find_tessdata()
    if folder is None:
        return _missing("no Tesseract language data (tessdata) found")
    installed = {p.stem for p in folder.glob("*.traineddata")}
    languages = tuple(c for c, lang in LANGUAGES.items() if lang.tesseract in installed)
    if not languages:
        return _missing(f"no supported language data in {folder}")
    detail = f"{version} ({'tesserocr, in process' if backend == 'api' else 'tesseract CLI'})"
    return EngineStatus("tesseract", True, detail, languages), backend, folder


class TesseractEngine(OcrEngine):
    name = "tesseract"

    def __init__(self, backend: Backend = "auto", tessdata: Path | None = None) -> None:
        self._requested_backend = backend
        self._tessdata = tessdata
        self._local = threading.local()

    @property
    def _setup(self) -> Setup:
        return probe(self._requested_backend, self._tessdata)

    def status(self) -> EngineStatus:
        return self._setup[0]

    @property
    def backend(self) -> str | None:
        return self._setup[1]

    def require(self, languages: list[str]) -> None:
        status = self.status()
        if not status.available:
            raise BatchVisionError(
                ErrorCode.MODEL_UNAVAILABLE,
                f"ocr engine 'tesseract' is unavailable: {status.detail}",
            )
        # `*` reads whatever is installed (probe() refuses an installation with no languages)
        missing = [c for c in languages if c not in status.languages and not is_auto(languages)]
        if missing:
            packages = " ".join(
                "tesseract-ocr-" + tesseract_code(c).replace("_", "-") for c in missing
            )
            raise BatchVisionError(
                ErrorCode.MODEL_UNAVAILABLE,
                f"ocr engine 'tesseract' has no language data for {missing}; "
                f"install it with `apt-get install {packages}`",
            )

    def recognize(self, pixels: RGBArray, languages: list[str]) -> OcrPage:
        self.require(languages)
        if is_auto(languages):
            return self._recognize_detected(pixels)
        return _assemble(self._read(pixels, languages), languages)

    def _read(self, pixels: RGBArray, languages: list[str]) -> list[_Word]:
        lang = "+".join(tesseract_code(c) for c in languages)
        if self.backend == "api":
            return self._run_api(pixels, lang)
        return self._run_cli(pixels, lang)

    # -- languages: ["*"] -------------------------------------------------------------------------

    def _recognize_detected(self, pixels: RGBArray) -> OcrPage:
        by_script = script_languages(self.status().languages)
        script = self._osd_script(pixels)
        if script in by_script:
            languages = by_script[script]
            words = self._read(pixels, languages)
        else:
            languages, words = self._best_reading(pixels, by_script)
        page = _assemble(words, languages)
        page.languages = page.found_languages()
        return page

    def _best_reading(
        self, pixels: RGBArray, by_script: dict[str, list[str]]
    ) -> tuple[list[str], list[_Word]]:
        """The reading with the best score among one per script (the first, Latin, on a tie)."""
        best: tuple[float, list[str], list[_Word]] | None = None
        for script, languages in by_script.items():
            words = self._read(pixels, languages)
            score = reading_score([(w.text, w.confidence) for w in words], script)
            if best is None or score > best[0]:
                best = (score, languages, words)
        assert best is not None  # probe() refuses an installation without languages
        return best[1], best[2]

    def _osd_script(self, pixels: RGBArray) -> str | None:
        if self.backend != "api" or not _has_osd(self._setup[2]):
            return None
        api = self._api(OSD)
        try:
            _set_pixels(api, pixels)
            return osd_script(api.DetectOrientationScript())
        except RuntimeError:  # tesserocr's way of saying OSD could not run on this image
            return None
        finally:
            api.Clear()

    # -- in process -------------------------------------------------------------------------------

    def _api(self, lang: str) -> Any:
        import tesserocr

        apis: OrderedDict[str, Any] | None = getattr(self._local, "apis", None)
        if apis is None:
            apis = self._local.apis = OrderedDict()
        api = apis.get(lang)
        if api is None:
            # OSD's model is a legacy (non-LSTM) one, run on its own page mode.
            osd = lang == OSD
            api = tesserocr.PyTessBaseAPI(
                path=str(self._setup[2]) + os.sep,
                lang=lang,
                psm=tesserocr.PSM.OSD_ONLY if osd else tesserocr.PSM.AUTO,
                oem=tesserocr.OEM.TESSERACT_ONLY if osd else tesserocr.OEM.LSTM_ONLY,
            )
            apis[lang] = api
            while len(apis) > _APIS_PER_THREAD:
                _, old = apis.popitem(last=False)
                old.End()
        apis.move_to_end(lang)
        return api

    def _run_api(self, pixels: RGBArray, lang: str) -> list[_Word]:
        import tesserocr

        api = self._api(lang)
        try:
            _set_pixels(api, pixels)
            api.Recognize()
            words: list[_Word] = []
            iterator = api.GetIterator()
            if iterator is None:
                return words
            ril = tesserocr.RIL
            block = line = -1
            while True:
                if iterator.IsAtBeginningOf(ril.BLOCK):
                    block += 1
                if iterator.IsAtBeginningOf(ril.TEXTLINE):
                    line += 1
                text = "" if iterator.Empty(ril.WORD) else _word_text(iterator, ril.WORD)
                if text and not iterator.ParagraphIsLtr():
                    text = visual_to_logical(text)
                box = iterator.BoundingBox(ril.WORD) if text else None
                if text and box is not None:
                    words.append(
                        _Word(
                            block,
                            line,
                            box,
                            text,
                            float(iterator.Confidence(ril.WORD)),
                            iterator.WordRecognitionLanguage(),
                        )
                    )
                if not iterator.Next(ril.WORD):
                    break
            return words
        finally:
            api.Clear()

    # -- one process per image --------------------------------------------------------------------

    def _run_cli(self, pixels: RGBArray, lang: str) -> list[_Word]:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "PPM")
        # One thread per process: the pool already runs images in parallel.
        env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
        cmd = ["tesseract", "stdin", "stdout", "--tessdata-dir", str(self._setup[2])]
        cmd += ["-l", lang, "--psm", "3", "--oem", "1", "tsv"]
        try:
            done = subprocess.run(
                cmd,
                input=buffer.getvalue(),
                capture_output=True,
                env=env,
                timeout=_CLI_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RuntimeError(f"tesseract failed: {exc}") from exc
        if done.returncode != 0:
            raise RuntimeError(f"tesseract exited {done.returncode}: {done.stderr[-500:]!r}")
        return _parse_tsv(done.stdout.decode("utf-8", errors="replace"))


def _set_pixels(api: Any, pixels: RGBArray) -> None:
    height, width = pixels.shape[:2]
    data = cast(str, pixels.tobytes())  # the stub says str; the binding takes bytes
    api.SetImageBytes(data, width, height, 3, 3 * width)


@cache
def _has_osd(tessdata: Path | None) -> bool:
    return tessdata is not None and (tessdata / f"{OSD}.traineddata").is_file()


def _word_text(iterator: Any, level: Any) -> str:
    try:
        return str(iterator.GetUTF8Text(level) or "").strip()
    except RuntimeError:  # tesserocr's way of saying "no text here"
        return ""


def visual_to_logical(text: str) -> str:
    """A right-to-left word as tesserocr's word iterator spells it (left to right on the page) in
    reading order: reversed, with runs of left-to-right characters (digits, Latin) kept as read."""
    out: list[str] = []
    run: list[str] = []
    for char in reversed(text):
        if unicodedata.bidirectional(char) in ("L", "EN", "AN"):
            run.insert(0, char)
            continue
        out.extend(run)
        run = []
        out.append(char)
    out.extend(run)
    return "".join(out)


def _cli_version(binary: str) -> str:
    try:
        done = subprocess.run(
            [binary, "--version"], capture_output=True, timeout=30, check=False, text=True
        )
    except (OSError, subprocess.TimeoutExpired):
        return "tesseract"
    lines = (done.stdout or done.stderr).splitlines()
    return lines[0] if lines else "tesseract"


def _parse_tsv(tsv: str) -> list[_Word]:
    words: list[_Word] = []
    lines: dict[tuple[int, int, int], int] = {}
    reader = csv.DictReader(io.StringIO(tsv), delimiter="\t", quoting=csv.QUOTE_NONE)
    for row in reader:
        if row.get("level") != "5":
            continue
        text = (row.get("text") or "").strip()
        if not text:
            continue
        block = int(row["block_num"])
        key = (block, int(row["par_num"]), int(row["line_num"]))
        line = lines.setdefault(key, len(lines))
        x, y, w, h = (int(row[k]) for k in ("left", "top", "width", "height"))
        words.append(_Word(block, line, (x, y, x + w, y + h), text, float(row["conf"]), None))
    return words


def _assemble(words: list[_Word], languages: list[str]) -> OcrPage:
    page = OcrPage("tesseract", list(languages))
    blocks: OrderedDict[int, OrderedDict[int, list[OcrWord]]] = OrderedDict()
    for word in words:
        reported = from_tesseract(word.language) if word.language else None
        language = (
            reported
            if reported in languages
            else infer_language(word.text, languages, fallback=reported)
        )
        x1, y1, x2, y2 = word.box
        ocr_word = OcrWord(word.text, rect(x1, y1, x2, y2), word.confidence / 100.0, language)
        blocks.setdefault(word.block, OrderedDict()).setdefault(word.line, []).append(ocr_word)
    for block_lines in blocks.values():
        lines = [
            OcrLine(
                bounding_polygon([w.polygon for w in line_words]),
                join_words([w.text for w in line_words]),
                line_words,
            )
            for line_words in block_lines.values()
        ]
        settle_languages(lines)
        page.blocks.append(OcrBlock(bounding_polygon([ln.polygon for ln in lines]), lines))
    return page
