"""The `ocr` skill's default languages, old and new, side by side on ../shared/evaldata/ocr.

Three parameter sets, each through the server's own pipeline (`Pipeline.analyze`, the `ocr` skill
with `engine` as given, default `auto`), on every image of every subset:

- `old default`: `languages: ["en", "ru"]`, what no languages meant before (`["en", "zh"]` with
  `--engine ppocr`);
- `new default`: no `languages` at all (the skill's default today);
- `["*"]`: automatic detection asked for explicitly.

Per subset (the top folder of each label: cyrillic_lines, multilang_lines, icdar2015, word_crops):

- CER = total edit distance / total reference characters, whitespace collapsed (`eval_ocr.Cer`).
  The no-text image adds the characters an engine made up to the edits (its reference has none).
  ICDAR 2015 photos have no reading order a page reader can be held to, so there both sides are
  the words sorted (labelled words without the `###` ignore marks), then compared as one string;
  the ICDAR word F1 of `eval_ocr.score_icdar` (IoU >= 0.5 and the same text) is printed beside it.
- Latin in Cyrillic lines: of the lines whose label has Cyrillic letters and no Latin ones, how
  many outputs contain a Latin letter (look-alikes such as "AzeKCAaHTPOBKA" for "Александровка").
- Mean seconds per image: one image per call, the three parameter sets taken in turn on each image
  (so load drift on the shared machine falls on all three alike), after one untimed warm-up pass
  of every set over the first image of each subset (API objects and models loaded).

Nothing here is tuned on these figures; they are reported.

    .venv/bin/python bench/eval_ocr_default.py [--engine auto|tesseract|ppocr] [--limit N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from batchvision.core.settings import Settings
from batchvision.core.types import ImageInput, Task
from batchvision.models.ocr.languages import script_of
from batchvision.pipeline import Pipeline
from eval_ocr import Cer, Detection, score_icdar

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "evaldata" / "ocr"
DEFAULT_MODELS = REPO.parent / "shared" / "models"
SUBSETS = ("cyrillic_lines", "multilang_lines", "icdar2015", "word_crops")


@dataclass
class Measure:
    cer: Cer = field(default_factory=Cer)
    icdar: Detection = field(default_factory=Detection)
    cyrillic_lines: int = 0
    with_latin: int = 0
    images: int = 0
    seconds: float = 0.0


def parameter_sets(engine: str) -> dict[str, dict[str, Any]]:
    old = ["en", "zh"] if engine == "ppocr" else ["en", "ru"]
    return {
        "old default " + "+".join(old): {"engine": engine, "languages": old},
        "new default (none)": {"engine": engine},
        '["*"]': {"engine": engine, "languages": ["*"]},
    }


def scripts(text: str) -> set[str]:
    return {s for s in map(script_of, text) if s is not None}


def is_cyrillic_line(reference: str) -> bool:
    found = scripts(reference)
    return "cyrillic" in found and "latin" not in found


def sorted_words(text: str) -> str:
    return " ".join(sorted(text.split()))


def score(measure: Measure, label: dict[str, Any], output: dict[str, Any]) -> None:
    text = output["text"]
    if label.get("words"):  # ICDAR 2015: order-free CER, and the word F1
        cares = [w["text"] for w in label["words"] if not w["ignore"]]
        measure.cer.add(sorted_words(text), " ".join(sorted(cares)))
        score_icdar(measure.icdar, output, label["words"])
    else:
        measure.cer.add(text, label["text"])
    if is_cyrillic_line(label["text"]):
        measure.cyrillic_lines += 1
        measure.with_latin += "latin" in scripts(text)


async def evaluate(
    pipeline: Pipeline, data: Path, labels: dict[str, Any], sets: dict[str, dict[str, Any]]
) -> dict[tuple[str, str], Measure]:
    tasks = {name: pipeline.prepare_tasks([Task("ocr", params)]) for name, params in sets.items()}

    async def read(path: str, name: str) -> dict[str, Any]:
        image = ImageInput(0, data=(data / path).read_bytes())
        [result] = await pipeline.analyze([image], tasks[name])
        if result.errors:
            raise SystemExit(f"{path} with {name}: {result.errors[0].message}")
        output: dict[str, Any] = result.outputs["ocr"]
        return output

    firsts = {path.split("/")[0]: path for path in sorted(labels)}
    for path in firsts.values():  # warm-up: untimed
        for name in sets:
            await read(path, name)
    measures: dict[tuple[str, str], Measure] = defaultdict(Measure)
    for path, label in sorted(labels.items()):
        subset = path.split("/")[0]
        for name in sets:
            start = time.perf_counter()
            output = await read(path, name)
            measure = measures[(subset, name)]
            measure.seconds += time.perf_counter() - start
            measure.images += 1
            score(measure, label, output)
    return measures


def print_table(measures: dict[tuple[str, str], Measure], sets: list[str]) -> None:
    print("| subset | metric | " + " | ".join(sets) + " |")
    print("|---|---|" + "---|" * len(sets))
    for subset in SUBSETS:
        cells = [measures[(subset, name)] for name in sets]
        if not cells[0].images:
            continue
        label = f"{subset} ({cells[0].images})"
        print(f"| {label} | CER | " + " | ".join(f"{100 * m.cer.value:.1f}%" for m in cells) + " |")
        if cells[0].cyrillic_lines:
            shares = [f"{m.with_latin}/{m.cyrillic_lines}" for m in cells]
            print(f"| {label} | Cyrillic lines with Latin letters | " + " | ".join(shares) + " |")
        if cells[0].icdar.gt:
            f1 = [f"{100 * m.icdar.pr()[2]:.1f}%" for m in cells]
            print(f"| {label} | word F1 (IoU >= 0.5 + text) | " + " | ".join(f1) + " |")
        times = [f"{m.seconds / m.images:.3f}" for m in cells]
        print(f"| {label} | mean s / image | " + " | ".join(times) + " |")


def limited(labels: dict[str, Any], limit: int | None) -> dict[str, Any]:
    """At most `limit` images per subset (all without it), in name order."""
    kept: dict[str, Any] = {}
    counts: dict[str, int] = defaultdict(int)
    for path in sorted(labels):
        subset = path.split("/")[0]
        if limit is None or counts[subset] < limit:
            kept[path] = labels[path]
            counts[subset] += 1
    return kept


async def main_async(args: argparse.Namespace) -> None:
    labels = limited(json.loads((args.data / "labels.json").read_text()), args.limit)
    sets = parameter_sets(args.engine)
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), model_dirs=[args.models], auth="disabled")
        pipeline = Pipeline(settings)
        try:
            measures = await evaluate(pipeline, args.data, labels, sets)
        finally:
            await pipeline.close()
    print(f"engine {args.engine}, {len(labels)} images from {args.data}")
    print_table(measures, list(sets))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--models", type=Path, default=DEFAULT_MODELS)
    parser.add_argument("--engine", choices=["auto", "tesseract", "ppocr"], default="auto")
    parser.add_argument("--limit", type=int, default=None, help="images per subset (default all)")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
