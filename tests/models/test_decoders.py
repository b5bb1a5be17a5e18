"""Each output family decoded from its real model file in ../shared/models, plus NMS itself."""

from __future__ import annotations

import numpy as np
import pytest

from batchvision.core.settings import Settings
from batchvision.intake.decode import decode_image
from batchvision.models.decoders import (
    DecodeParams,
    Detections,
    class_aware_nms,
    decode_detr,
    decode_ultralytics,
    decode_yolov5,
    nms,
)
from batchvision.models.detector import DetectRequest
from batchvision.models.registry import ModelRegistry
from conftest import MODELS, coco_image


@pytest.fixture(scope="module")
def registry() -> ModelRegistry:
    return ModelRegistry(Settings(model_dirs=[MODELS], ort_intra_op_threads=2))


def _detect(registry: ModelRegistry, model: str, image_name: str, threshold: float = 0.3):
    detector = registry.model(model)
    image = decode_image(coco_image(image_name), max_pixels=10**8)
    params = DecodeParams(score_threshold=threshold)
    (dets,) = detector.run_batch([detector.preprocess(DetectRequest(image, params))])
    return detector, image, dets


def _labels(detector, dets: Detections) -> set[str]:
    return {detector.class_names[int(c)] for c in dets.class_ids}


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    inter_w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    inter_h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = inter_w * inter_h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


# 000000000139.jpg: a living room; labels.json has a tv at [7.0, 167.8, 156.4, 262.6].
TV_BOX = np.array([7.0, 167.8, 156.4, 262.6])


@pytest.mark.parametrize("model", ["yolox-nano", "yolov8n-int8-agpl"])
def test_nms_families_find_the_tv_where_the_label_says(registry: ModelRegistry, model: str) -> None:
    detector, image, dets = _detect(registry, model, "000000000139.jpg")
    assert {"tv", "person"} <= _labels(detector, dets)
    tv_boxes = dets.boxes[[detector.class_names[int(c)] == "tv" for c in dets.class_ids]]
    assert max(_iou(box, TV_BOX) for box in tv_boxes) > 0.8
    assert (dets.boxes[:, [0, 2]] >= 0).all() and (dets.boxes[:, [0, 2]] <= image.width).all()
    assert (dets.boxes[:, [1, 3]] >= 0).all() and (dets.boxes[:, [1, 3]] <= image.height).all()
    assert (dets.scores >= 0.3).all()


def test_detr_family_boxes_map_back_through_the_centred_letterbox(registry: ModelRegistry) -> None:
    detector, _, dets = _detect(registry, "deimv2-atto", "000000000139.jpg", threshold=0.4)
    assert "dining table" in _labels(detector, dets)
    # labels.json: dining table at [321.2, 231.2, 446.8, 320.2]
    table = np.array([321.2, 231.2, 446.8, 320.2])
    tables = dets.boxes[[detector.class_names[int(c)] == "dining table" for c in dets.class_ids]]
    assert max(_iou(box, table) for box in tables) > 0.5


def test_yolox_decoding_of_a_single_synthetic_anchor() -> None:
    """One anchor at stride 8, cell (2, 3): centre ((0.5+2)*8, (0.5+3)*8), size exp(0)*8."""
    raw = np.zeros((3549, 85), np.float32)
    row = 3 * 52 + 2
    raw[row, :4] = [0.5, 0.5, 0.0, 0.0]
    raw[row, 4] = 0.9
    raw[row, 5 + 16] = 0.8  # class 16
    from batchvision.models.decoders import decode_yolox

    dets = decode_yolox([raw], (416, 416), DecodeParams(score_threshold=0.5))
    assert len(dets) == 1
    np.testing.assert_allclose(dets.boxes[0], [16.0, 24.0, 24.0, 32.0], atol=1e-5)
    assert dets.class_ids[0] == 16
    assert dets.scores[0] == pytest.approx(0.72)


def test_ultralytics_layout_is_channels_first() -> None:
    raw = np.zeros((84, 8400), np.float32)
    raw[:4, 7] = [100, 50, 20, 10]
    raw[4 + 2, 7] = 0.6
    dets = decode_ultralytics([raw], (640, 640), DecodeParams(score_threshold=0.5))
    np.testing.assert_allclose(dets.boxes, [[90, 45, 110, 55]])
    assert dets.class_ids.tolist() == [2]


def test_yolov5_layout_multiplies_objectness() -> None:
    raw = np.zeros((10, 8), np.float32)
    raw[0] = [50, 50, 10, 10, 0.5, 0.1, 0.9, 0.2]
    raw[1] = [50, 50, 10, 10, 0.2, 0.9, 0.0, 0.0]
    dets = decode_yolov5([raw], (64, 64), DecodeParams(score_threshold=0.3))
    assert dets.class_ids.tolist() == [1]
    assert dets.scores[0] == pytest.approx(0.45)


def test_detr_decoding_thresholds_filters_and_caps() -> None:
    labels = np.array([1, 2, 3, 1], np.int64)
    boxes = np.arange(16, dtype=np.float32).reshape(4, 4)
    scores = np.array([0.9, 0.1, 0.8, 0.7], np.float32)
    params = DecodeParams(score_threshold=0.5, max_detections=2)
    dets = decode_detr([labels, boxes, scores], (320, 320), params)
    assert dets.scores.tolist() == pytest.approx([0.9, 0.8])
    only_ones = DecodeParams(score_threshold=0.5, class_filter=frozenset({1}))
    assert decode_detr([labels, boxes, scores], (320, 320), only_ones).class_ids.tolist() == [1, 1]


def test_nms_suppresses_overlaps_and_keeps_best_first() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], np.float32)
    scores = np.array([0.5, 0.9, 0.7], np.float32)
    assert nms(boxes, scores, 0.45).tolist() == [1, 2]
    assert nms(boxes, scores, 0.95).tolist() == [1, 2, 0]


def test_class_aware_nms_keeps_overlapping_boxes_of_different_classes() -> None:
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]], np.float32)
    dets = Detections(boxes, np.array([0.9, 0.8, 0.7], np.float32), np.array([0, 1, 0]))
    kept = class_aware_nms(dets, 0.45)
    assert sorted(kept.class_ids.tolist()) == [0, 1]
