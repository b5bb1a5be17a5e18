"""PP-OCR through `rapidocr` (ONNX Runtime) with the models its wheel ships: PP-OCRv6 small text
detection and recognition and the PP-OCR mobile text-direction classifier.

The model files are taken from the installed package and passed by path, so nothing is ever
downloaded; if they are missing the engine reports itself unavailable. One `RapidOCR` object is
shared by all worker threads: it is configured once and called without per-call options, so a
call only reads its state, and ONNX Runtime sessions are safe to run concurrently.

PP-OCR finds text lines (4-point boxes, possibly rotated) and reads each one. Words come from the
recogniser's own character positions (rapidocr's `return_word_box`: Latin text splits at spaces,
Chinese/Japanese into single characters). Should those not line up with the line's text, the line
is split at spaces into words with sub-boxes proportional to the characters' offsets along the
line's top and bottom edges, each with the line's score. Detections that continue one another on
the same row are joined into one line (see `_merge_rows`). Lines are grouped into blocks by
proximity: two lines share a block when their x-ranges overlap, their heights differ by less
than 1.6x and the vertical gap between them is under 0.8 of the smaller height.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from collections.abc import Sequence
from functools import cache
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from batchvision.core.errors import BatchVisionError, ErrorCode
from batchvision.core.types import RGBArray
from batchvision.models.ocr.base import (
    EngineStatus,
    OcrEngine,
    OcrLine,
    OcrPage,
    OcrWord,
    Point,
    Polygon,
    group_blocks,
    merge_rows,
    settle_languages,
)
from batchvision.models.ocr.languages import (
    PPOCR_AUTO_LANGUAGES,
    PPOCR_LANGUAGES,
    infer_language,
    is_auto,
)

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "install the rapidocr package (pip install 'rapidocr>=3.10,<4'), which ships its models"
)


def _missing(why: str) -> tuple[EngineStatus, dict[str, Path]]:
    return EngineStatus("ppocr", False, f"{why}: {INSTALL_HINT}", ()), {}


@cache
def probe() -> tuple[EngineStatus, dict[str, Path]]:
    """The engine's status and model files, looked up once per process (see tesseract.probe)."""
    spec = importlib.util.find_spec("rapidocr")
    if spec is None or not spec.submodule_search_locations:
        return _missing("the rapidocr package is not installed")
    package = Path(next(iter(spec.submodule_search_locations)))
    models: dict[str, Path] = {}
    for task in ("det", "rec", "cls"):
        found = sorted((package / "models").glob(f"*_{task}_*.onnx"))
        if not found:
            return _missing(f"rapidocr ships no {task} model in {package / 'models'}")
        models[task] = found[-1]
    names = ", ".join(p.stem for p in models.values())
    detail = f"rapidocr {version('rapidocr')} ({names})"
    return EngineStatus("ppocr", True, detail, tuple(sorted(PPOCR_LANGUAGES))), models


class PpOcrEngine(OcrEngine):
    name = "ppocr"

    def __init__(self, intra_threads: int = 1) -> None:
        self.intra_threads = intra_threads
        self._lock = threading.Lock()
        self._ocr: Any = None

    def status(self) -> EngineStatus:
        return probe()[0]

    def require(self, languages: list[str]) -> None:
        status = self.status()
        if not status.available:
            raise BatchVisionError(
                ErrorCode.MODEL_UNAVAILABLE, f"ocr engine 'ppocr' is unavailable: {status.detail}"
            )

    def _engine(self) -> Any:
        if self._ocr is None:
            with self._lock:
                if self._ocr is None:
                    from rapidocr import RapidOCR

                    models = probe()[1]
                    self._ocr = RapidOCR(
                        params={
                            "Global.log_level": "error",
                            "Global.return_word_box": True,
                            "Det.model_path": str(models["det"]),
                            "Rec.model_path": str(models["rec"]),
                            "Cls.model_path": str(models["cls"]),
                            "EngineConfig.onnxruntime.intra_op_num_threads": self.intra_threads,
                            "EngineConfig.onnxruntime.inter_op_num_threads": 1,
                        }
                    )
        return self._ocr

    def recognize(self, pixels: RGBArray, languages: list[str]) -> OcrPage:
        """`["*"]`: its model reads every language it has at once, so each word's language is
        inferred among them all and the page reports the languages found."""
        self.require(languages)
        if is_auto(languages):
            page = self._recognize(pixels, list(PPOCR_AUTO_LANGUAGES))
            page.languages = page.found_languages()
            return page
        return self._recognize(pixels, languages)

    def _recognize(self, pixels: RGBArray, languages: list[str]) -> OcrPage:
        bgr = np.ascontiguousarray(pixels[:, :, ::-1])
        engine = self._engine()
        try:
            result = engine(bgr)
        except Exception as exc:  # rapidocr refuses e.g. extreme aspect ratios (ResizeImgError)
            height, width = pixels.shape[:2]
            log.info("ppocr failed on a %dx%d image", width, height, exc_info=True)
            raise BatchVisionError(
                ErrorCode.PROCESSING_ERROR,
                f"ocr engine 'ppocr' could not process this {width}x{height} image "
                f"({type(exc).__name__})",
            ) from exc
        boxes = getattr(result, "boxes", None)
        texts: Sequence[str] = getattr(result, "txts", None) or ()
        scores: Sequence[float] = getattr(result, "scores", None) or ()
        page = OcrPage(self.name, list(languages))
        if boxes is None or not texts:
            return page
        word_results = getattr(result, "word_results", None) or ()
        aligned = len(word_results) == len(texts)
        lines: list[OcrLine] = []
        for i, (box, text, score) in enumerate(zip(boxes, texts, scores, strict=True)):
            text = " ".join(text.split())
            if not text:
                continue
            polygon = _polygon(box)
            line_language = infer_language(text, languages)
            words = _words_from_engine(word_results[i], text) if aligned else None
            if words is None:
                words = _split_proportionally(polygon, text, float(score))
            lines.append(
                OcrLine(
                    polygon,
                    text,
                    [
                        OcrWord(t, p, c, infer_language(t, languages, fallback=line_language))
                        for t, p, c in words
                    ],
                )
            )
        lines = merge_rows(lines)
        settle_languages(lines)
        page.blocks = group_blocks(lines)
        return page


WordTuple = tuple[str, Polygon, float]


def _polygon(points: Any) -> Polygon:
    p = [(float(x), float(y)) for x, y in np.asarray(points, dtype=np.float64).reshape(4, 2)]
    return (p[0], p[1], p[2], p[3])


def _words_from_engine(entries: Any, text: str) -> list[WordTuple] | None:
    """rapidocr's (text, score, 4 points) per word, if they spell out the line; else None."""
    words: list[WordTuple] = []
    try:
        for word_text, score, points in entries:
            word_text = str(word_text).strip()
            if word_text:
                words.append((word_text, _polygon(points), float(score)))
    except (TypeError, ValueError):
        return None
    if not words or "".join(w for w, _, _ in words) != text.replace(" ", ""):
        return None
    return words


def _split_proportionally(polygon: Polygon, text: str, score: float) -> list[WordTuple]:
    tl, tr, br, bl = polygon
    n = len(text)

    def at(a: Point, b: Point, f: float) -> Point:
        return (a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f)

    words: list[WordTuple] = []
    start = 0
    for token in text.split(" "):
        end = start + len(token)
        if token:
            f0, f1 = start / n, end / n
            poly = (at(tl, tr, f0), at(tl, tr, f1), at(bl, br, f1), at(bl, br, f0))
            words.append((token, poly, score))
        start = end + 1
    return words
