"""Raw detector outputs to boxes, one decoder per output family.

Every decoder takes one image's outputs (batch dimension removed) and returns `Detections` in the
model-input (canvas) frame, already thresholded, NMS'd where the family needs it, and capped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class DecodeParams:
    score_threshold: float = 0.25
    nms_iou: float = 0.45
    max_detections: int = 100
    class_filter: frozenset[int] | None = None  # keep only these class ids (before NMS and cap)


@dataclass
class Detections:
    boxes: FloatArray  # (N, 4) xyxy
    scores: FloatArray  # (N,)
    class_ids: IntArray  # (N,)

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))


def cxcywh_to_xyxy(boxes: FloatArray) -> FloatArray:
    half = boxes[:, 2:4] / 2.0
    return np.concatenate([boxes[:, :2] - half, boxes[:, :2] + half], axis=1)


def nms(boxes: FloatArray, scores: FloatArray, iou_threshold: float) -> IntArray:
    """Greedy non-maximum suppression; returns kept indices, best score first."""
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        best = int(order[0])
        keep.append(best)
        rest = order[1:]
        inter_w = np.maximum(0.0, np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]))
        inter_h = np.maximum(0.0, np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]))
        inter = inter_w * inter_h
        iou = inter / np.maximum(areas[best] + areas[rest] - inter, 1e-9)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def class_aware_nms(dets: Detections, iou_threshold: float) -> Detections:
    """NMS per class in one pass: offsetting each class far apart means boxes of different
    classes never overlap."""
    if len(dets) == 0:
        return dets
    offset = (dets.boxes.max() + 1.0) * dets.class_ids.astype(np.float32)[:, None]
    keep = nms(dets.boxes + offset, dets.scores, iou_threshold)
    return Detections(dets.boxes[keep], dets.scores[keep], dets.class_ids[keep])


def _select(boxes: FloatArray, class_scores: FloatArray, params: DecodeParams) -> Detections:
    class_ids = class_scores.argmax(axis=1)
    scores = class_scores[np.arange(len(class_ids)), class_ids]
    mask = _keep_mask(scores, class_ids, params)
    return Detections(
        boxes[mask].astype(np.float32),
        scores[mask].astype(np.float32),
        class_ids[mask].astype(np.int64),
    )


def _keep_mask(
    scores: FloatArray, class_ids: IntArray, params: DecodeParams
) -> npt.NDArray[np.bool_]:
    mask = scores >= params.score_threshold
    if params.class_filter is not None:
        mask &= np.isin(class_ids, np.fromiter(params.class_filter, dtype=np.int64))
    return mask


def _cap(dets: Detections, limit: int) -> Detections:
    if len(dets) <= limit:
        return dets
    top = np.argsort(-dets.scores, kind="stable")[:limit]
    return Detections(dets.boxes[top], dets.scores[top], dets.class_ids[top])


@cache
def _yolox_grid(width: int, height: int, strides: tuple[int, ...]) -> tuple[FloatArray, FloatArray]:
    grids, expanded = [], []
    for stride in strides:
        cols, rows = width // stride, height // stride
        xv, yv = np.meshgrid(np.arange(cols), np.arange(rows))
        grids.append(np.stack((xv, yv), axis=2).reshape(-1, 2))
        expanded.append(np.full((cols * rows, 1), stride))
    return (
        np.concatenate(grids).astype(np.float32),
        np.concatenate(expanded).astype(np.float32),
    )


def decode_yolox(
    outputs: Sequence[FloatArray], input_size: tuple[int, int], params: DecodeParams
) -> Detections:
    """YOLOX head `[A, 5 + C]`: grid offsets and log sizes per stride 8/16/32; objectness and
    class scores already sigmoided, score = obj * cls; NMS is ours to do."""
    raw = outputs[0]
    grid, strides = _yolox_grid(input_size[0], input_size[1], (8, 16, 32))
    if raw.shape[0] != grid.shape[0]:
        raise ValueError(f"YOLOX output has {raw.shape[0]} anchors, expected {grid.shape[0]}")
    centers = (raw[:, :2] + grid) * strides
    sizes = np.exp(np.minimum(raw[:, 2:4], 20.0)) * strides
    boxes = cxcywh_to_xyxy(np.concatenate([centers, sizes], axis=1))
    dets = _select(boxes, raw[:, 5:] * raw[:, 4:5], params)
    return _cap(class_aware_nms(dets, params.nms_iou), params.max_detections)


def decode_ultralytics(
    outputs: Sequence[FloatArray], input_size: tuple[int, int], params: DecodeParams
) -> Detections:
    """Ultralytics YOLOv8/11 head `[4 + C, A]`: cx, cy, w, h then class scores; no objectness."""
    raw = outputs[0].T
    dets = _select(cxcywh_to_xyxy(raw[:, :4]), raw[:, 4:], params)
    return _cap(class_aware_nms(dets, params.nms_iou), params.max_detections)


def decode_yolov5(
    outputs: Sequence[FloatArray], input_size: tuple[int, int], params: DecodeParams
) -> Detections:
    """YOLOv5 head `[A, 5 + C]` (MegaDetector v5 too): cx, cy, w, h, objectness, class scores."""
    raw = outputs[0]
    dets = _select(cxcywh_to_xyxy(raw[:, :4]), raw[:, 5:] * raw[:, 4:5], params)
    return _cap(class_aware_nms(dets, params.nms_iou), params.max_detections)


def decode_detr(
    outputs: Sequence[FloatArray], input_size: tuple[int, int], params: DecodeParams
) -> Detections:
    """DETR-style heads (RT-DETR, D-FINE, DEIM): `labels`, `boxes` xyxy in the frame given by
    `orig_target_sizes`, `scores`; set prediction, so no NMS."""
    labels, boxes, scores = outputs[0], outputs[1], outputs[2]
    mask = _keep_mask(scores, labels.astype(np.int64), params)
    dets = Detections(
        boxes[mask].astype(np.float32),
        scores[mask].astype(np.float32),
        labels[mask].astype(np.int64),
    )
    return _cap(dets, params.max_detections)
