"""An object detector: a card's preprocessing, an ONNX graph, and the family's decoder."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from batchvision.core.types import DecodedImage
from batchvision.models.cards import ModelCard
from batchvision.models.decoders import DECODERS, DecodeParams, Detections
from batchvision.models.preprocess import FloatArray, Letterbox, letterbox, to_tensor
from batchvision.models.runtime import OnnxModel


@dataclass
class PreparedImage:
    """One image ready for the model, and what is needed to map boxes back to the original."""

    tensor: FloatArray
    letterbox: Letterbox
    scale_x: float
    scale_y: float
    width: int
    height: int


def prepare(card: ModelCard, image: DecodedImage) -> PreparedImage:
    """CPU work that needs only the card, so it can run before the model is even loaded."""
    canvas, box = letterbox(image.pixels, card.input_size, card.pre)
    scale_x, scale_y = image.scale
    return PreparedImage(
        to_tensor(canvas, card.pre), box, scale_x, scale_y, image.width, image.height
    )


def to_original_frame(dets: Detections, item: PreparedImage) -> Detections:
    if len(dets) == 0:
        return dets
    boxes = item.letterbox.to_pixels(dets.boxes)
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]] * item.scale_x, 0, item.width)
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]] * item.scale_y, 0, item.height)
    return Detections(boxes, dets.scores, dets.class_ids)


class Detector:
    def __init__(self, card: ModelCard, model: OnnxModel) -> None:
        self.card = card
        self.model = model
        self.class_names = card.class_names()
        self._decode = DECODERS[card.family]

    def detect(self, batch: list[tuple[PreparedImage, DecodeParams]]) -> list[Detections]:
        """One model batch; boxes come back as pixel xyxy in each original image."""
        if not batch:
            return []
        stacked = np.stack([item.tensor for item, _ in batch])
        outputs = self.model.run(stacked)
        results = []
        for (item, params), raw in zip(batch, outputs, strict=True):
            dets = self._decode(raw, self.card.input_size, params)
            dets = self._drop_unknown_classes(dets)
            results.append(to_original_frame(dets, item))
        return results

    def _drop_unknown_classes(self, dets: Detections) -> Detections:
        valid = (dets.class_ids >= 0) & (dets.class_ids < len(self.class_names))
        if valid.all():
            return dets
        return Detections(dets.boxes[valid], dets.scores[valid], dets.class_ids[valid])
