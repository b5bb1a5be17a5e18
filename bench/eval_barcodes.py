"""Decode rate and false positives of the `barcode` skill on ../shared/evaldata/barcodes.

Runs the server's own path in-process (intake decode, the `barcode` skill on the engine's CPU
pool). An image whose label has a format counts as a hit when one reported barcode has exactly the
labelled text and the labelled format: the format reported, or the symbology family it belongs to
(the Code 39 labels of the Code 32 and PZN samples). Label names are matched like the skill's
`formats` parameter (case, spaces and dashes ignored: "EAN-13" is EAN13). Images labelled
`format: null` must give no report at all; every report on them is a false positive.

    .venv/bin/python bench/eval_barcodes.py [--no-try-harder] [--no-try-rotate]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from batchvision.skills.barcode import FORMAT_NAMES, name_key
from bench_support import analyze_files

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "evaldata" / "barcodes"


@dataclass
class FormatScore:
    images: int = 0
    hits: int = 0
    exact_format_hits: int = 0
    text_hits: int = 0


@dataclass
class Report:
    labelled: int = 0
    hits: int = 0
    exact_format_hits: int = 0
    text_hits: int = 0
    negatives: int = 0
    false_positive_reports: int = 0
    false_positive_images: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    misses: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    per_format: dict[str, FormatScore] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def decode_rate(self) -> float:
        return self.hits / self.labelled if self.labelled else 0.0


def load_labels(data_dir: Path = DEFAULT_DATA) -> dict[str, dict[str, Any]]:
    labels: dict[str, dict[str, Any]] = json.loads((data_dir / "labels.json").read_text())
    return labels


def label_format(name: str) -> str:
    """A label's format name as the skill reports it ("EAN-13" -> "EAN13")."""
    return FORMAT_NAMES[name_key(name)].name


def score(
    labels: Mapping[str, Mapping[str, Any]], outputs: Mapping[str, Mapping[str, Any] | None]
) -> Report:
    """`outputs`: the skill's output per file name (None where the image failed)."""
    report = Report()
    for name, label in sorted(labels.items()):
        output = outputs.get(name)
        if output is None:
            report.errors[name] = "no output"
            barcodes: list[dict[str, Any]] = []
        else:
            barcodes = list(output["barcodes"])
        if label["format"] is None:
            report.negatives += 1
            report.false_positive_reports += len(barcodes)
            if barcodes:
                report.false_positive_images.append(name)
            continue
        wanted = label_format(label["format"])
        per = report.per_format.setdefault(label["format"], FormatScore())
        report.labelled += 1
        per.images += 1
        same_text = [b for b in barcodes if b["text"] == label["text"]]
        exact = any(b["format"] == wanted for b in same_text)
        hit = exact or any(b["symbology"] == wanted for b in same_text)
        report.text_hits += bool(same_text)
        per.text_hits += bool(same_text)
        report.exact_format_hits += exact
        per.exact_format_hits += exact
        report.hits += hit
        per.hits += hit
        if not hit:
            report.misses[name] = [(b["format"], b["text"]) for b in barcodes]
    return report


async def _run(data_dir: Path, names: list[str], params: dict[str, Any]) -> dict[str, Any]:
    results = await analyze_files(data_dir / "images", names, "barcode", params)
    outputs: dict[str, Any] = {}
    for name, result in zip(names, results, strict=True):
        outputs[name] = None if result.errors else result.outputs.get("barcode")
    return outputs


def evaluate(data_dir: Path = DEFAULT_DATA, **params: Any) -> Report:
    labels = load_labels(data_dir)
    start = time.perf_counter()
    outputs = asyncio.run(_run(data_dir, sorted(labels), params))
    report = score(labels, outputs)
    report.seconds = time.perf_counter() - start
    return report


def print_report(report: Report, data_dir: Path, params: Mapping[str, Any]) -> None:
    print(f"barcode skill on {data_dir} (params: {dict(params) or 'defaults'})")
    print(f"{'label format':<14}{'images':>7}{'hits':>6}{'exact fmt':>10}{'text only':>10}")
    for fmt, per in sorted(report.per_format.items()):
        row = f"{per.images:>7}{per.hits:>6}{per.exact_format_hits:>10}{per.text_hits:>10}"
        print(f"{fmt:<14}{row}")
    print(
        f"decode rate (text and format): {report.hits}/{report.labelled} = {report.decode_rate:.4f}"
        f"  (exact format name: {report.exact_format_hits}, text alone: {report.text_hits})"
    )
    print(
        f"false-positive images: {report.negatives}, reports on them: "
        f"{report.false_positive_reports} {report.false_positive_images or ''}"
    )
    for name, found in sorted(report.misses.items()):
        print(f"  miss {name}: {found or 'nothing reported'}")
    for name, error in sorted(report.errors.items()):
        print(f"  error {name}: {error}")
    print(f"{report.seconds:.2f} s for {report.labelled + report.negatives} images")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--no-try-harder", action="store_true")
    parser.add_argument("--no-try-rotate", action="store_true")
    args = parser.parse_args()
    params: dict[str, Any] = {}
    if args.no_try_harder:
        params["try_harder"] = False
    if args.no_try_rotate:
        params["try_rotate"] = False
    print_report(evaluate(args.data, **params), args.data, params)


if __name__ == "__main__":
    main()
