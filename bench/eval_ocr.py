"""Accuracy of each OCR engine on ../shared/evaldata/ocr (subsets found by the labels' `kind`).

Images go through the server's own path: intake decoding, then the engine's `recognize` and the
skill's output format. Each engine is measured on every subset, also on languages the `ocr` skill
does not offer it for (marked "not offered"): those figures are what the `auto` rule rests on.

- Russian scanned lines (`kind` starts with "scanned"), languages ["ru"]: character error rate,
  CER = total edit distance / total reference characters, after collapsing whitespace.
- Multi-language lines ("single text line"): CER per label language (sr-Cyrl read as `sr`), with
  that one language requested; the no-text image counts the characters an engine made up.
- English word crops ("cropped scene word"), ["en"]: word accuracy, the whole recognised text
  equal to the label ignoring case (and surrounding whitespace).
- ICDAR 2015 ("scene text"), ["en"]: word-level precision / recall / F1. A predicted word matches
  a labelled word when their polygons' IoU is >= 0.5 and the texts are equal ignoring case.
  Labelled words with `ignore` (text `###`) are excluded: a prediction that matches none of the
  others but overlaps one of them with IoU >= 0.5 is neither a true nor a false positive. The
  "det" columns count IoU alone (no text match).
- Rendered English lines (synthetic, not evaldata): 12 sentences and words typical of documents,
  drawn black on white in DejaVu Sans and DejaVu Serif at 20, 32 and 48 px, ["en"]: CER. This
  stands for clean printed text, which the evaldata sets have only one line of.

`auto` is what the skill does with `engine: "auto"` for each image's languages: Tesseract for
Cyrillic and other scripts PP-OCR cannot read, PP-OCR for Chinese, and for Latin-only languages
Tesseract, falling back to PP-OCR when Tesseract finds no words or is unsure of them.

    .venv/bin/python bench/eval_ocr.py [--engines tesseract,tesseract-cli,ppocr,auto] [--examples]

`tesseract` is the in-process backend the server uses (tesserocr), `tesseract-cli` the Debian
`tesseract` program run once per image.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from shapely.geometry import Polygon as ShapelyPolygon

from batchvision.core.types import RGBArray
from batchvision.intake.decode import decode_image
from batchvision.models.ocr import (
    CASCADE,
    SUPPORTED,
    CascadeEngine,
    EngineStatus,
    OcrEngine,
    OcrPage,
    PpOcrEngine,
    TesseractEngine,
    auto_candidates,
)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "evaldata" / "ocr"
IOU = 0.5
LANG_ALIASES = {"sr-Cyrl": "sr"}
FONTS = Path("/usr/share/fonts/truetype/dejavu")
RENDERED = [
    "The first invoice is due on 14 March 2024.",
    "Please find the attached files for review.",
    "Total amount: 1,245.50 EUR (incl. VAT)",
    "Meeting room B, floor 3, turn left after the lift.",
    "Quality assurance report",
    "Shipping address: 42 Baker Street, London",
    "Warning: do not open while the machine is running",
    "Chapter 7: Results and discussion",
    "Batch vision server",
    "first",
    "office",
    "fifth floor",
]


def rendered_lines() -> list[tuple[str, RGBArray]]:
    images = []
    for font_name in ("DejaVuSans", "DejaVuSerif"):
        for size in (20, 32, 48):
            font = ImageFont.truetype(str(FONTS / f"{font_name}.ttf"), size)
            for text in RENDERED:
                image = Image.new("RGB", (int(font.getlength(text)) + 40, size * 3), "white")
                ImageDraw.Draw(image).text((20, size), text, fill="black", font=font)
                images.append((text, np.asarray(image)))
    return images


class AutoEngine(OcrEngine):
    """The skill's `engine: "auto"`: the first rule candidate, per image's languages."""

    name = "auto"

    def __init__(self, tesseract: OcrEngine, ppocr: OcrEngine) -> None:
        self.engines = {
            "tesseract": tesseract,
            "ppocr": ppocr,
            CASCADE: CascadeEngine(tesseract, ppocr),
        }

    def status(self) -> EngineStatus:
        return self.engines[CASCADE].status()

    def require(self, languages: list[str]) -> None:
        self.engines[auto_candidates(languages)[0]].require(languages)

    def recognize(self, pixels: RGBArray, languages: list[str]) -> OcrPage:
        return self.engines[auto_candidates(languages)[0]].recognize(pixels, languages)


def levenshtein(a: str, b: str) -> int:
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def norm(text: str) -> str:
    return " ".join(text.split())


@dataclass
class Cer:
    edits: int = 0
    chars: int = 0
    lines: int = 0

    def add(self, predicted: str, reference: str) -> None:
        self.edits += levenshtein(norm(predicted), norm(reference))
        self.chars += len(norm(reference))
        self.lines += 1

    @property
    def value(self) -> float:
        return self.edits / self.chars if self.chars else 0.0


@dataclass
class Detection:
    tp: int = 0
    det_tp: int = 0
    predicted: int = 0
    det_predicted: int = 0
    gt: int = 0

    def pr(self, det: bool = False) -> tuple[float, float, float]:
        tp, predicted = (self.det_tp, self.det_predicted) if det else (self.tp, self.predicted)
        p = tp / predicted if predicted else 0.0
        r = tp / self.gt if self.gt else 0.0
        f = 2 * p * r / (p + r) if p + r else 0.0
        return p, r, f


@dataclass
class EngineReport:
    engine: str
    russian: Cer = field(default_factory=Cer)
    multilang: dict[str, Cer] = field(default_factory=lambda: defaultdict(Cer))
    negative_chars: int = 0
    crops_right: int = 0
    crops: int = 0
    crops_cer: Cer = field(default_factory=Cer)
    icdar: Detection = field(default_factory=Detection)
    rendered: Cer = field(default_factory=Cer)
    produced_by: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    examples: list[str] = field(default_factory=list)


def shape(points: list[list[int]] | list[int]) -> ShapelyPolygon:
    flat: list[float] = []
    for p in points:
        flat.extend(p if isinstance(p, list) else [p])
    poly = ShapelyPolygon(list(zip(flat[0::2], flat[1::2], strict=True)))
    return poly if poly.is_valid else poly.buffer(0)


def iou(a: ShapelyPolygon, b: ShapelyPolygon) -> float:
    inter = a.intersection(b).area
    union = a.area + b.area - inter
    return inter / union if union > 0 else 0.0


def score_icdar(report: Detection, output: dict[str, Any], words: list[dict[str, Any]]) -> None:
    preds = [
        (shape(w["polygon"]), w["text"])
        for page in output["pages"]
        for block in page["blocks"]
        for line in block["lines"]
        for w in line["words"]
    ]
    cares = [(shape(w["polygon"]), w["text"]) for w in words if not w["ignore"]]
    ignores = [shape(w["polygon"]) for w in words if w["ignore"]]
    report.gt += len(cares)
    for det_only in (False, True):
        used: set[int] = set()
        tp = 0
        for gt_poly, gt_text in cares:
            best, best_iou = None, IOU
            for k, (poly, text) in enumerate(preds):
                if k in used or (not det_only and text.casefold() != gt_text.casefold()):
                    continue
                value = iou(poly, gt_poly)
                if value >= best_iou:
                    best, best_iou = k, value
            if best is not None:
                used.add(best)
                tp += 1
        dont_care = sum(
            1
            for k, (poly, _) in enumerate(preds)
            if k not in used and any(iou(poly, ig) >= IOU for ig in ignores)
        )
        if det_only:
            report.det_tp += tp
            report.det_predicted += len(preds) - dont_care
        else:
            report.tp += tp
            report.predicted += len(preds) - dont_care


def evaluate(
    engine_name: str, engine: OcrEngine, data: Path, labels: dict[str, Any]
) -> EngineReport:
    report = EngineReport(engine_name)

    def read(path: str, languages: list[str]) -> dict[str, Any]:
        image = decode_image((data / path).read_bytes(), max_pixels=64_000_000)
        page = engine.recognize(image.pixels, languages)
        report.produced_by[page.engine] += 1
        return page.to_dict(image.width, image.height, image.scale)

    for path, label in sorted(labels.items()):
        kind = label["kind"]
        start = time.perf_counter()
        if kind.startswith("scanned"):
            out = read(path, ["ru"])
            report.russian.add(out["text"], label["text"])
            subset = "russian"
        elif kind.startswith("single text line"):
            lang = LANG_ALIASES.get(label["lang"], label["lang"])
            out = read(path, [lang])
            report.multilang[lang].add(out["text"], label["text"])
            subset = "multilang"
        elif kind.startswith("no text"):
            out = read(path, ["en"])
            report.negative_chars += len(norm(out["text"]))
            subset = "multilang"
        elif kind.startswith("cropped"):
            out = read(path, ["en"])
            report.crops += 1
            report.crops_right += norm(out["text"]).casefold() == label["text"].casefold()
            report.crops_cer.add(out["text"], label["text"])
            subset = "crops"
        elif kind.startswith("scene text"):
            out = read(path, ["en"])
            score_icdar(report.icdar, out, label["words"])
            subset = "icdar"
        else:
            continue
        report.seconds[subset] += time.perf_counter() - start
        if subset != "russian":
            report.examples.append(f"{path}: {norm(out['text'])[:70]!r}")
    for text, pixels in rendered_lines():
        start = time.perf_counter()
        page = engine.recognize(pixels, ["en"])
        report.produced_by[page.engine] += 1
        report.rendered.add(page.text, text)
        report.seconds["rendered"] += time.perf_counter() - start
        if norm(page.text) != text:
            report.examples.append(f"rendered: {text!r} -> {norm(page.text)!r}")
    return report


def offered(engine: str, lang: str) -> str:
    if engine == "auto":
        return ""
    return "" if lang in SUPPORTED[engine.split("-")[0]] else " (not offered)"


def print_table(reports: list[EngineReport]) -> None:
    pct: Callable[[float], str] = lambda v: f"{100 * v:.1f}%"  # noqa: E731
    head = "| metric | " + " | ".join(r.engine for r in reports) + " |"
    print(head)
    print("|---" * (len(reports) + 1) + "|")

    def row(name: str, cells: list[str]) -> None:
        print(f"| {name} | " + " | ".join(cells) + " |")

    row(
        f"Russian scanned lines, CER ({reports[0].russian.lines} lines, ru)",
        [pct(r.russian.value) + offered(r.engine, "ru") for r in reports],
    )
    langs = sorted({lang for r in reports for lang in r.multilang})
    for lang in langs:
        n = reports[0].multilang[lang].lines
        row(
            f"multi-language lines, CER, {lang} ({n} line{'s' if n > 1 else ''})",
            [pct(r.multilang[lang].value) + offered(r.engine, lang) for r in reports],
        )
    row("no-text image: characters reported", [str(r.negative_chars) for r in reports])
    row(
        f"English word crops, word accuracy ({reports[0].crops} crops)",
        [f"{r.crops_right}/{r.crops} = {pct(r.crops_right / max(r.crops, 1))}" for r in reports],
    )
    row("English word crops, CER", [pct(r.crops_cer.value) for r in reports])
    gt = reports[0].icdar.gt
    for det, name in ((False, "words (IoU >= 0.5 + text)"), (True, "det only (IoU >= 0.5)")):
        row(
            f"ICDAR 2015 ({gt} words), {name}: P / R / F1",
            [" / ".join(pct(v) for v in r.icdar.pr(det)) for r in reports],
        )
    n = reports[0].rendered.lines
    row(f"rendered English lines, CER ({n} images)", [pct(r.rendered.value) for r in reports])
    subsets = ("russian", "multilang", "crops", "icdar", "rendered")
    row(
        "seconds (" + ", ".join(subsets) + ")",
        [", ".join(f"{r.seconds[s]:.1f}" for s in subsets) for r in reports],
    )
    row(
        "pages produced by",
        [", ".join(f"{k} {v}" for k, v in sorted(r.produced_by.items())) for r in reports],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--engines", default="tesseract,tesseract-cli,ppocr,auto")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads for PP-OCR")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    parser.add_argument("--examples", action="store_true", help="print what each engine read")
    args = parser.parse_args()
    labels = json.loads((args.data / "labels.json").read_text())
    tesseract, ppocr = TesseractEngine("api"), PpOcrEngine(args.threads)
    engines: dict[str, OcrEngine] = {
        "tesseract": tesseract,
        "tesseract-cli": TesseractEngine("cli"),
        "ppocr": ppocr,
        "auto": AutoEngine(tesseract, ppocr),
    }
    reports = []
    for name in args.engines.split(","):
        status = engines[name].status()
        print(f"{name}: {status.detail}")
        if not status.available:
            raise SystemExit(f"{name} is unavailable")
        reports.append(evaluate(name, engines[name], args.data, labels))
    print()
    print_table(reports)
    if args.examples:
        for r in reports:
            print(f"\n{r.engine}:")
            print("\n".join(r.examples))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    r.engine: {
                        "russian_cer": r.russian.value,
                        "multilang_cer": {k: v.value for k, v in r.multilang.items()},
                        "negative_chars": r.negative_chars,
                        "crop_accuracy": r.crops_right / max(r.crops, 1),
                        "icdar_prf": r.icdar.pr(),
                        "icdar_det_prf": r.icdar.pr(det=True),
                        "rendered_cer": r.rendered.value,
                    }
                    for r in reports
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
