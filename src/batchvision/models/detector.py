"""ONNX object detectors: a card's letterbox, the graph, and the family's decoder.

`OnnxDetector` does everything but decoding; a family is a subclass naming its decoder.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Self

import numpy as np

from batchvision.core.types import DecodedImage
from batchvision.models.base import Availability, Model
from batchvision.models.cards import ModelCard
from batchvision.models.decoders import (
    DecodeParams,
    Detections,
    decode_detr,
    decode_ultralytics,
    decode_yolov5,
    decode_yolox,
)
from batchvision.models.files import ModelFiles, estimated_mb, file_availability
from batchvision.models.preprocess import FloatArray, Letterbox, letterbox, to_tensor
from batchvision.models.runtime import OnnxModel, open_onnx


@dataclass(frozen=True)
class DetectRequest:
    image: DecodedImage
    params: DecodeParams


@dataclass
class PreparedImage:
    """One image ready for the model, and what is needed to map boxes back to the original."""

    tensor: FloatArray
    letterbox: Letterbox
    scale_x: float
    scale_y: float
    width: int
    height: int
    params: DecodeParams


def prepare(card: ModelCard, request: DetectRequest) -> PreparedImage:
    """CPU work that needs only the card."""
    image = request.image
    canvas, box = letterbox(image.pixels, card.size, card.pre)
    scale_x, scale_y = image.scale
    tensor = to_tensor(canvas, card.pre)
    return PreparedImage(tensor, box, scale_x, scale_y, image.width, image.height, request.params)


def to_original_frame(dets: Detections, item: PreparedImage) -> Detections:
    if len(dets) == 0:
        return dets
    boxes = item.letterbox.to_pixels(dets.boxes)
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]] * item.scale_x, 0, item.width)
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]] * item.scale_y, 0, item.height)
    return Detections(boxes, dets.scores, dets.class_ids)


Outputs = list[FloatArray]


class OnnxDetector(Model[DetectRequest, PreparedImage, Outputs, Detections]):
    """Boxes come back as pixel xyxy in each original image."""

    task = "detect"

    def __init__(self, card: ModelCard, model: OnnxModel) -> None:
        super().__init__(card)
        self.model = model
        self.class_names = card.class_names()

    @classmethod
    def inspect(cls, card: ModelCard, files: ModelFiles) -> Availability:
        return file_availability(card, files, classes=len(card.class_names()))

    @classmethod
    def load(cls, card: ModelCard, files: ModelFiles) -> Self:
        path = cls.inspect(card, files).require().path
        assert path is not None
        return cls(card, open_onnx(path, files.settings))

    def memory_mb(self) -> int:
        return estimated_mb(self.model.path)

    def preprocess(self, item: DetectRequest) -> PreparedImage:
        return prepare(self.card, item)

    def predict(self, batch: list[PreparedImage]) -> Sequence[Outputs]:
        return self.model.run(np.stack([item.tensor for item in batch]))

    def postprocess(self, raw: Outputs, item: PreparedImage) -> Detections:
        dets = self._drop_unknown_classes(self.decode(raw, item.params))
        return to_original_frame(dets, item)

    @abstractmethod
    def decode(self, raw: Outputs, params: DecodeParams) -> Detections:
        """One image's outputs as detections in the model-input frame."""

    def _drop_unknown_classes(self, dets: Detections) -> Detections:
        valid = (dets.class_ids >= 0) & (dets.class_ids < len(self.class_names))
        if valid.all():
            return dets
        return Detections(dets.boxes[valid], dets.scores[valid], dets.class_ids[valid])


class YoloxDetector(OnnxDetector):
    family = "yolox"

    def decode(self, raw: Outputs, params: DecodeParams) -> Detections:
        return decode_yolox(raw, self.card.size, params)


class UltralyticsDetector(OnnxDetector):
    family = "ultralytics"

    def decode(self, raw: Outputs, params: DecodeParams) -> Detections:
        return decode_ultralytics(raw, self.card.size, params)


class Yolov5Detector(OnnxDetector):
    family = "yolov5"

    def decode(self, raw: Outputs, params: DecodeParams) -> Detections:
        return decode_yolov5(raw, self.card.size, params)


class DetrDetector(OnnxDetector):
    family = "detr"

    def decode(self, raw: Outputs, params: DecodeParams) -> Detections:
        return decode_detr(raw, self.card.size, params)
