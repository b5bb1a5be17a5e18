"""COCO mAP@[.5:.95] of a detect model on ../shared/evaldata/coco, measured with pycocotools.

Runs the same code path the server uses (intake decode, card preprocessing, batched ONNX run,
family decoder) with the evaluation settings: score threshold 0.001, at most 100 detections per
image, class-aware NMS at IoU 0.45.

    python bench/eval_coco_map.py --model yolox-nano --models ../shared/models
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
from pathlib import Path
from typing import Any

from batchvision.core.settings import Settings
from batchvision.intake.decode import decode_image
from batchvision.models.decoders import DecodeParams
from batchvision.models.detector import DetectRequest
from batchvision.models.registry import ModelRegistry

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "evaldata" / "coco"
DEFAULT_MODELS = REPO.parent / "shared" / "models"
EVAL_PARAMS = DecodeParams(score_threshold=0.001, nms_iou=0.45, max_detections=100)


def _ground_truth(labels: dict[str, Any]) -> tuple[dict[str, Any], dict[str, int]]:
    images, annotations, ids = [], [], {}
    for image_id, (name, entry) in enumerate(sorted(labels.items()), start=1):
        ids[name] = image_id
        images.append({"id": image_id, "width": entry["width"], "height": entry["height"]})
        for obj in entry["objects"]:
            x1, y1, x2, y2 = obj["bbox_xyxy"]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": obj["class_id"],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
    categories = [{"id": i, "name": str(i)} for i in range(80)]
    return {"images": images, "annotations": annotations, "categories": categories}, ids


def detections(model: str, data_dir: Path, model_dir: Path) -> list[dict[str, Any]]:
    labels = json.loads((data_dir / "labels.json").read_text())
    _, ids = _ground_truth(labels)
    registry = ModelRegistry(Settings(model_dirs=[model_dir]))
    detector = registry.model(model)
    side = max(detector.card.size)
    found = []
    for name in sorted(labels):
        image = decode_image(
            (data_dir / "images" / name).read_bytes(), max_pixels=10**8, target_side=side
        )
        (dets,) = detector.run_batch([detector.preprocess(DetectRequest(image, EVAL_PARAMS))])
        for box, score, cls in zip(dets.boxes, dets.scores, dets.class_ids, strict=True):
            x1, y1, x2, y2 = (float(v) for v in box)
            found.append(
                {
                    "image_id": ids[name],
                    "category_id": int(cls),
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": float(score),
                }
            )
    return found


def coco_map(model: str, data_dir: Path = DEFAULT_DATA, model_dir: Path = DEFAULT_MODELS) -> float:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    labels = json.loads((data_dir / "labels.json").read_text())
    truth, _ = _ground_truth(labels)
    found = detections(model, data_dir, model_dir)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = truth
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(found) if found else COCO(), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return float(evaluator.stats[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="yolox-nano")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--models", type=Path, default=DEFAULT_MODELS)
    args = parser.parse_args()
    score = coco_map(args.model, args.data, args.models)
    print(f"{args.model}: COCO mAP@[.5:.95] = {score:.4f} on {args.data}")


if __name__ == "__main__":
    main()
