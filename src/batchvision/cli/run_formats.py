"""Output formats for `batchvision run`: pure functions from per-image records to file bytes.

A record is one image's outcome, in scan order:
`{"file": rel_path, "status": "ok", "image": {width, height, ...}, "outputs": {skill: payload}}`
or `{"file": rel_path, "status": "error", "image": ... | None, "error": {"code", "message"}}`.
Records are also what the checkpoint stores, so a format never needs the images again.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchvision.core.types import normalized_xywh

Record = dict[str, Any]

# Skills whose outputs are lists of boxes; `csv` and `coco` lay those out one row per box.
DETECT_LIKE_SKILLS = frozenset({"detect", "animals"})

# MegaDetector's fixed detection categories and how the `animals` categories map onto them.
MD_DETECTION_CATEGORIES = {"1": "animal", "2": "person", "3": "vehicle"}
MD_CATEGORY_IDS = {"animal": "1", "human": "2", "vehicle": "3"}
MD_FORMAT_VERSION = "1.4"


@dataclass(frozen=True)
class RunInfo:
    """What a format needs to know about the run besides the records."""

    skill: str
    completed_at: str  # ISO 8601, UTC


class FormatError(ValueError):
    """The format cannot represent this skill's output (a usage error, found before any work)."""


# What a results file's extension asks for; `.json` depends on the skill (JSON_FORMATS).
SUFFIX_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
JSON_FORMATS = {"animals": "megadetector", "detect": "coco"}


def format_for(out: Path, skill: str) -> str:
    """The format `--out` implies when `--format` is not given: .csv is csv, .jsonl jsonl,
    .json MegaDetector's format for animals and COCO for detect (a .json of any other skill is
    refused: JSON Lines in a .json file would mislead every reader), anything else jsonl, or
    MegaDetector's format for animals."""
    suffix = out.suffix.lower()
    if suffix in SUFFIX_FORMATS:
        return SUFFIX_FORMATS[suffix]
    if suffix == ".json":
        if skill not in JSON_FORMATS:
            raise FormatError(
                f"a .json results file is MegaDetector's format (animals) or COCO (detect); "
                f"for {skill} use .jsonl or .csv, or pass --format"
            )
        return JSON_FORMATS[skill]
    return "megadetector" if skill == "animals" else "jsonl"


def check_format(fmt: str, skill: str) -> None:
    """Refuse format/skill pairs that cannot work, before a long run starts."""
    if fmt not in FORMATS:
        raise FormatError(f"unknown format '{fmt}'; available: {', '.join(sorted(FORMATS))}")
    if fmt == "megadetector" and skill != "animals":
        raise FormatError("--format megadetector needs --skill animals")
    if fmt == "coco" and skill not in DETECT_LIKE_SKILLS:
        raise FormatError(
            f"--format coco needs a detection skill ({', '.join(sorted(DETECT_LIKE_SKILLS))})"
        )


def render(fmt: str, records: Sequence[Record], info: RunInfo) -> bytes:
    check_format(fmt, info.skill)
    return FORMATS[fmt](records, info)


# --- shared helpers ---------------------------------------------------------------------------


def _payload(record: Record, skill: str) -> dict[str, Any] | None:
    if record["status"] != "ok":
        return None
    payload = record["outputs"].get(skill)
    return payload if isinstance(payload, dict) else None


def _boxes(payload: dict[str, Any] | None) -> list[dict[str, Any]] | None:
    """The list of boxes of a detect-like payload (`objects` for detect, `annotations` for
    animals), or None when the payload is not detect-like."""
    if payload is None:
        return None
    for key in ("objects", "annotations"):
        if isinstance(payload.get(key), list):
            boxes: list[dict[str, Any]] = payload[key]
            return boxes
    return None


def _norm_xywh(box: dict[str, Any], record: Record) -> list[float]:
    """MegaDetector's normalised top-left x, y, width, height, from the skill's pixel box."""
    size = record["image"]
    return normalized_xywh(box["box"], int(size["width"]), int(size["height"]))


def _is_detect_like(records: Sequence[Record], skill: str) -> bool:
    return skill in DETECT_LIKE_SKILLS or any(
        _boxes(_payload(r, skill)) is not None for r in records
    )


def _error_text(record: Record) -> str:
    error = record.get("error") or {}
    return f"{error.get('code', 'error')}: {error.get('message', '')}"


# --- jsonl ------------------------------------------------------------------------------------


def to_jsonl(records: Sequence[Record], info: RunInfo) -> bytes:
    lines = [json.dumps(record, ensure_ascii=False, separators=(",", ":")) for record in records]
    return "".join(line + "\n" for line in lines).encode()


# --- csv --------------------------------------------------------------------------------------

_DETECT_COLUMNS = ["file", "status", "label", "score", "x", "y", "w", "h", "error"]
_ITEM_COLUMNS = ["file", "status", "output", "error"]


def to_csv(records: Sequence[Record], info: RunInfo) -> bytes:
    detect_like = _is_detect_like(records, info.skill)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(_DETECT_COLUMNS if detect_like else _ITEM_COLUMNS)
    for record in records:
        rows = _detect_rows(record, info.skill) if detect_like else [_item_row(record, info.skill)]
        writer.writerows(rows)
    return out.getvalue().encode()


def _detect_rows(record: Record, skill: str) -> list[list[Any]]:
    if record["status"] != "ok":
        return [[record["file"], "error", "", "", "", "", "", "", _error_text(record)]]
    boxes = _boxes(_payload(record, skill)) or []
    if not boxes:  # an image with no detections still gets its row: "empty" is a result
        return [[record["file"], "ok", "", "", "", "", "", "", ""]]
    return [
        [record["file"], "ok", box["label"], box["score"], *_norm_xywh(box, record), ""]
        for box in boxes
    ]


def _item_row(record: Record, skill: str) -> list[Any]:
    if record["status"] != "ok":
        return [record["file"], "error", "", _error_text(record)]
    output = json.dumps(_payload(record, skill), ensure_ascii=False, separators=(",", ":"))
    return [record["file"], "ok", output, ""]


# --- coco -------------------------------------------------------------------------------------


def to_coco(records: Sequence[Record], info: RunInfo) -> bytes:
    """COCO detection results. Failed images are left out of `images`: COCO has no place for
    a failure and an image without width/height would break COCO tools."""
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    category_ids: dict[str, int] = {}
    for record in records:
        payload = _payload(record, info.skill)
        if payload is None or record.get("image") is None:
            continue
        image_id = len(images) + 1
        size = record["image"]
        images.append(
            {
                "id": image_id,
                "file_name": record["file"],
                "width": size["width"],
                "height": size["height"],
            }
        )
        for box in _boxes(payload) or []:
            category = category_ids.setdefault(box["label"], len(category_ids) + 1)
            annotations.append(_coco_annotation(len(annotations) + 1, image_id, category, box))
    categories = [{"id": cid, "name": name} for name, cid in category_ids.items()]
    body = {"images": images, "annotations": annotations, "categories": categories}
    return json.dumps(body, ensure_ascii=False, indent=1).encode()


def _coco_annotation(
    ann_id: int, image_id: int, category: int, box: dict[str, Any]
) -> dict[str, Any]:
    x1, y1, x2, y2 = (float(v) for v in box["box"])
    width, height = round(x2 - x1, 2), round(y2 - y1, 2)
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category,
        "bbox": [round(x1, 2), round(y1, 2), width, height],
        "area": round(width * height, 2),
        "score": float(box["score"]),
        "iscrowd": 0,
    }


# --- megadetector -----------------------------------------------------------------------------


class _Classes:
    """Classification category ids "1", "2", … in order of first appearance, so the same run
    always numbers its taxa the same way (resumed or not)."""

    def __init__(self) -> None:
        self.ids: dict[str, str] = {}
        self.names: dict[str, str] = {}
        self.descriptions: dict[str, str] = {}

    def id_for(self, annotation: dict[str, Any]) -> str:
        taxonomy = annotation["taxonomy"]
        key = str(taxonomy.get("id") or annotation["label"])
        if key not in self.ids:
            class_id = str(len(self.ids) + 1)
            self.ids[key] = class_id
            self.names[class_id] = str(annotation["label"])
            self.descriptions[class_id] = _taxonomy_string(taxonomy, annotation["label"])
        return self.ids[key]


def _taxonomy_string(taxonomy: dict[str, Any], label: str) -> str:
    """SpeciesNet's `id;class;order;family;genus;species;common name`, which AddaxAI and
    MegaDetector's postprocessing read from classification_category_descriptions."""
    parts = [taxonomy.get(k) or "" for k in ("id", "class", "order", "family", "genus", "species")]
    return ";".join([*map(str, parts), label])


def to_megadetector(records: Sequence[Record], info: RunInfo) -> bytes:
    """MegaDetector batch output format 1.4 (https://lila.science/megadetector-output-format)."""
    classes = _Classes()
    images = [_md_image(record, info.skill, classes) for record in records]
    body: dict[str, Any] = {
        "info": _md_info(records, info, classified=bool(classes.ids)),
        "detection_categories": dict(MD_DETECTION_CATEGORIES),
    }
    if classes.ids:
        body["classification_categories"] = classes.names
        body["classification_category_descriptions"] = classes.descriptions
    body["images"] = images
    return json.dumps(body, ensure_ascii=False, indent=1).encode()


def _md_info(records: Sequence[Record], info: RunInfo, *, classified: bool) -> dict[str, Any]:
    first = next((p for r in records if (p := _payload(r, info.skill)) is not None), {})
    out: dict[str, Any] = {
        "format_version": MD_FORMAT_VERSION,
        "detector": str(first.get("model", "unknown")),
        "detection_completion_time": info.completed_at,
        "detector_metadata": {"model_version": first.get("model_version")},
    }
    if classified:
        out["classifier"] = f"batchvision-animals/{first.get('mode', 'default')}"
        out["classification_completion_time"] = info.completed_at
    return out


def _md_image(record: Record, skill: str, classes: _Classes) -> dict[str, Any]:
    payload = _payload(record, skill)
    if payload is None:
        # The format's validator wants failed images to carry a null detections list.
        return {"file": record["file"], "failure": _error_text(record), "detections": None}
    annotations = _boxes(payload) or []
    detections = [_md_detection(a, record, classes) for a in annotations]
    return {"file": record["file"], "detections": detections}


def _md_detection(annotation: dict[str, Any], record: Record, classes: _Classes) -> dict[str, Any]:
    category = MD_CATEGORY_IDS.get(annotation["category"])
    if category is None:
        raise ValueError(f"animals category '{annotation['category']}' has no MegaDetector id")
    conf = round(float(annotation["score"]), 4)
    detection: dict[str, Any] = {
        "category": category,
        "conf": conf,
        "bbox": [round(v, 4) for v in _norm_xywh(annotation, record)],
    }
    if annotation.get("taxonomy"):
        detection["classifications"] = [[classes.id_for(annotation), conf]]
    return detection


Formatter = Callable[[Sequence[Record], RunInfo], bytes]

FORMATS: dict[str, Formatter] = {
    "jsonl": to_jsonl,
    "csv": to_csv,
    "coco": to_coco,
    "megadetector": to_megadetector,
}
