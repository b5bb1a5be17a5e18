"""Throughput of the OCR engines: Tesseract in process (tesserocr) vs one `tesseract` process per
image, and PP-OCR, on images from ../shared/evaldata/ocr.

Each engine first reads a few images in each worker thread (loading its models), then every
image of a set is read once, with 1 and with 2 worker threads (the server runs OCR on its CPU
pool, one image per thread).
Tesseract's process backend runs with OMP_THREAD_LIMIT=1, as the server does.

    .venv/bin/python bench/bench_ocr_engines.py [--lines 20] [--engines api,cli,ppocr]
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from batchvision.core.types import RGBArray
from batchvision.intake.decode import decode_image
from batchvision.models.ocr import OcrEngine, PpOcrEngine, TesseractEngine

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "evaldata" / "ocr"


def load(data: Path, lines: int) -> dict[str, tuple[list[str], list[RGBArray]]]:
    labels = json.loads((data / "labels.json").read_text())
    russian = sorted(p for p, v in labels.items() if v["kind"].startswith("scanned"))[:lines]
    icdar = sorted(p for p, v in labels.items() if v["kind"].startswith("scene text"))

    def decode(paths: list[str]) -> list[RGBArray]:
        return [decode_image((data / p).read_bytes(), max_pixels=64_000_000).pixels for p in paths]

    return {
        f"{len(russian)} Russian scanned lines": (["ru"], decode(russian)),
        f"{len(icdar)} ICDAR 2015 photos (1280x720)": (["en"], decode(icdar)),
    }


def measure(engine: OcrEngine, images: list[RGBArray], languages: list[str], threads: int) -> float:
    with ThreadPoolExecutor(threads) as pool:
        # Warm up: models load, and tesserocr makes its API object in each pool thread.
        list(pool.map(lambda px: engine.recognize(px, languages), images[: 2 * threads]))
        start = time.perf_counter()
        list(pool.map(lambda px: engine.recognize(px, languages), images))
        return len(images) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--lines", type=int, default=20, help="how many Russian lines")
    parser.add_argument("--engines", default="api,cli,ppocr")
    parser.add_argument("--ppocr-threads", type=int, default=2, help="ONNX Runtime threads")
    args = parser.parse_args()
    sets = load(args.data, args.lines)
    engines: dict[str, OcrEngine] = {
        "api": TesseractEngine("api"),
        "cli": TesseractEngine("cli"),
        "ppocr": PpOcrEngine(args.ppocr_threads),
    }
    labels = {
        "api": "tesseract, in process (tesserocr)",
        "cli": "tesseract, process per image",
        "ppocr": "ppocr (rapidocr)",
    }
    print("| engine | set | images/s, 1 thread | images/s, 2 threads |")
    print("|---|---|---|---|")
    for key in args.engines.split(","):
        engine = engines[key]
        status = engine.status()
        if not status.available:
            print(f"| {labels[key]} | unavailable: {status.detail} | | |")
            continue
        for name, (languages, images) in sets.items():
            one = measure(engine, images, languages, 1)
            two = measure(engine, images, languages, 2)
            print(f"| {status.detail} | {name} | {one:.2f} | {two:.2f} |")


if __name__ == "__main__":
    main()
