"""bench/eval_ocr_default.py, the script the README's default-language figures come from: its
scoring on hand-made outputs, and a short real run through the pipeline."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from batchvision.pipeline import Pipeline
from conftest import EVALDATA, bench_module, make_settings

OCR_DATA = EVALDATA / "ocr"


def output_of(text: str) -> dict[str, Any]:
    return {"text": text, "pages": [{"blocks": []}]}


def test_latin_look_alikes_in_a_cyrillic_line_are_counted() -> None:
    bench = bench_module("eval_ocr_default")
    label = {"text": "д. Александровка."}
    measure = bench.Measure()
    bench.score(measure, label, output_of("д. AzeKCAaHTPOBKA."))
    bench.score(measure, label, output_of("д. Александровка."))
    bench.score(measure, {"text": "VI"}, output_of("VI"))  # a Latin label is not a Cyrillic line
    assert (measure.cyrillic_lines, measure.with_latin) == (2, 1)
    assert measure.cer.chars == 2 * len("д. Александровка.") + 2
    assert 0 < measure.cer.value < 1


def test_icdar_text_is_compared_without_reading_order() -> None:
    bench = bench_module("eval_ocr_default")
    square = [0, 0, 10, 0, 10, 10, 0, 10]
    words = [
        {"text": "EXIT", "ignore": False, "polygon": square},
        {"text": "STAGE", "ignore": False, "polygon": square},
        {"text": "###", "ignore": True, "polygon": square},
    ]
    measure = bench.Measure()
    bench.score(measure, {"text": "EXIT STAGE", "words": words}, output_of("STAGE\nEXIT"))
    assert measure.cer.edits == 0 and measure.cer.chars == len("EXIT STAGE")
    assert measure.icdar.gt == 2


def test_a_short_run_measures_every_parameter_set(tmp_path: Path) -> None:
    bench = bench_module("eval_ocr_default")
    labels = json.loads((OCR_DATA / "labels.json").read_text())
    labels = {p: v for p, v in bench.limited(labels, 1).items() if p.startswith("cyrillic_lines")}
    sets = bench.parameter_sets("auto")
    pipeline = Pipeline(make_settings(tmp_path))

    async def go() -> dict[tuple[str, str], Any]:
        try:
            measures: dict[tuple[str, str], Any] = await bench.evaluate(
                pipeline, OCR_DATA, labels, sets
            )
            return measures
        finally:
            await pipeline.close()

    measures = asyncio.run(go())
    assert set(measures) == {("cyrillic_lines", name) for name in sets}
    for measure in measures.values():
        assert measure.images == 1 and measure.seconds > 0
        assert 0 <= measure.cer.value <= 1 and measure.cer.chars > 0
    new, star = (measures[("cyrillic_lines", name)] for name in list(sets)[1:])
    assert new.cer.edits == star.cer.edits  # no languages is ["*"]
