"""What a person reads after a command: `analyze`'s table (one line per image and skill) and the
line `run` ends with ("21 images: 18 with animals, 1 with people, 1 with vehicles, 1 empty,
0 failed"). Machines read `--json` and the results file; these are for eyes, so they are short.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from batchvision.cli.draw import shorten

Payload = Mapping[str, Any]
TOP_LABELS = 5  # labels named in a line; the rest are counted


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


# --- one image --------------------------------------------------------------------------------


def _scored(items: Sequence[Payload], noun: str) -> str:
    if not items:
        return f"no {noun}s"
    best = sorted(items, key=lambda item: -float(item["score"]))[:TOP_LABELS]
    named = ", ".join(f"{item['label']} {float(item['score']):.2f}" for item in best)
    more = f", +{len(items) - len(best)} more" if len(items) > len(best) else ""
    return f"{_count(len(items), noun)}: {named}{more}"


def _ocr_line(payload: Payload) -> str:
    lines = [ln for page in payload.get("pages", []) for b in page["blocks"] for ln in b["lines"]]
    if not lines:
        return "no text"
    return f"{_count(len(lines), 'line')}: {shorten(str(payload.get('text', '')))}"


def _barcode_line(payload: Payload) -> str:
    codes = payload.get("barcodes", [])
    if not codes:
        return "no barcodes"
    named = ", ".join(f"{code['format']} {shorten(str(code['text']), 40)!r}" for code in codes)
    return f"{_count(len(codes), 'barcode')}: {named}"


def _metadata_line(payload: Payload) -> str:
    facts = [f"{payload.get('width')}x{payload.get('height')}", str(payload.get("format", ""))]
    facts += [str(payload[key]) for key in ("camera_model", "capture_time") if payload.get(key)]
    return " ".join(facts)


def _synthetic_line(payload: Payload) -> str:
    return f"{payload.get('verdict')} (AI probability {payload.get('ai_probability')})"


IMAGE_LINES: dict[str, Callable[[Payload], str]] = {
    "detect": lambda p: _scored(p.get("objects", []), "object"),
    "animals": lambda p: _scored(p.get("annotations", []), "detection"),
    "ocr": _ocr_line,
    "barcode": _barcode_line,
    "metadata": _metadata_line,
    "point": lambda p: _count(len(p.get("points", [])), "point"),
    "caption": lambda p: shorten(str(p.get("caption", ""))),
    "query": lambda p: shorten(str(p.get("answer", ""))),
    "synthetic": _synthetic_line,
}


def describe_output(skill: str, payload: Any) -> str:
    line = IMAGE_LINES.get(skill)
    if line is not None and isinstance(payload, Mapping):
        return line(payload)
    return shorten(json.dumps(payload, ensure_ascii=False))


def analyze_table(results: Sequence[Mapping[str, Any]]) -> str:
    """FILE, SKILL and what it found, aligned; a failed image gets one row with its error."""
    rows = [("FILE", "SKILL", "RESULT")]
    for result in results:
        name = str(result.get("filename") or result.get("index"))
        if result.get("status") != "ok":
            error = (result.get("errors") or [{}])[0]
            rows.append((name, "error", f"{error.get('code')}: {error.get('message')}"))
            continue
        for skill, payload in result.get("outputs", {}).items():
            rows.append((name, skill, describe_output(skill, payload)))
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    lines = [f"{f:<{widths[0]}}  {s:<{widths[1]}}  {r}".rstrip() for f, s, r in rows]
    return "\n".join(lines)


# --- a whole run ------------------------------------------------------------------------------

Record = Mapping[str, Any]


def _payloads(records: Sequence[Record], skill: str) -> list[Payload]:
    return [r["outputs"].get(skill) or {} for r in records if r.get("status") == "ok"]


def _animals_totals(payloads: Sequence[Payload]) -> list[str]:
    categories = [{a["category"] for a in p.get("annotations", [])} for p in payloads]
    return [
        f"{sum('animal' in c for c in categories)} with animals",
        f"{sum('human' in c for c in categories)} with people",
        f"{sum('vehicle' in c for c in categories)} with vehicles",
        f"{sum(not c for c in categories)} empty",
    ]


def _detect_totals(payloads: Sequence[Payload]) -> list[str]:
    labels = Counter(o["label"] for p in payloads for o in p.get("objects", []))
    found = sum(bool(p.get("objects")) for p in payloads)
    top = ", ".join(f"{n} {label}" for label, n in labels.most_common(TOP_LABELS))
    more = ", …" if len(labels) > TOP_LABELS else ""
    objects = f" ({top}{more})" if labels else ""
    return [f"{found} with objects{objects}", f"{len(payloads) - found} empty"]


def _having(key: str, noun: str) -> Callable[[Sequence[Payload]], list[str]]:
    """Images whose payload has a non-empty `key`, and those without."""

    def totals(payloads: Sequence[Payload]) -> list[str]:
        found = sum(bool(p.get(key)) for p in payloads)
        return [f"{found} with {noun}", f"{len(payloads) - found} without"]

    return totals


def _ocr_totals(payloads: Sequence[Payload]) -> list[str]:
    found = sum(bool(str(p.get("text", "")).strip()) for p in payloads)
    return [f"{found} with text", f"{len(payloads) - found} without"]


def _synthetic_totals(payloads: Sequence[Payload]) -> list[str]:
    ai = sum(bool(p.get("is_ai")) for p in payloads)
    return [f"{ai} judged AI-generated", f"{len(payloads) - ai} not"]


RUN_TOTALS: dict[str, Callable[[Sequence[Payload]], list[str]]] = {
    "animals": _animals_totals,
    "detect": _detect_totals,
    "ocr": _ocr_totals,
    "barcode": _having("barcodes", "barcodes"),
    "point": _having("points", "points"),
    "caption": lambda payloads: [f"{len(payloads)} captioned"],
    "query": lambda payloads: [f"{len(payloads)} answered"],
    "metadata": lambda payloads: [f"{len(payloads)} read"],
    "synthetic": _synthetic_totals,
}


def _ok_totals(payloads: Sequence[Payload]) -> list[str]:
    return [f"{len(payloads)} ok"]


def run_summary(records: Sequence[Record], skill: str, *, frames: int = 0) -> str:
    """One line for the end of a run; video frames are counted as the images they are."""
    payloads = _payloads(records, skill)
    failed = len(records) - len(payloads)
    totals = RUN_TOTALS.get(skill, _ok_totals)(payloads)
    what = _count(len(records) - frames, "image")
    if frames:
        what += f" and {_count(frames, 'video frame')}"
    return f"{what}: {', '.join([*totals, f'{failed} failed'])}"
