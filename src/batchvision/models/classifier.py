"""A classifier run on detector crops (SpeciesNet's `always_crop` model and its kind).

Each crop is the detection box cut out of the decoded image and resized to the card's input
(`stretch` or `letterbox`), in the card's layout, channel order and scale. The model returns one
score per line of the card's label list, in that order; `softmax = true` cards return logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from batchvision.core.errors import BatchVisionError, ErrorCode
from batchvision.core.types import DecodedImage, RGBArray
from batchvision.models.cards import ModelCard
from batchvision.models.preprocess import FloatArray, letterbox, stretch, to_tensor
from batchvision.models.runtime import OnnxModel

BoxXYXY = tuple[float, float, float, float]


def count_labels(path: Path) -> int:
    """The label list's entries: its non-blank lines, one per model output."""
    with path.open(encoding="utf-8") as lines:
        return sum(1 for line in lines if line.strip())


def crop_pixels(image: DecodedImage, xyxy: BoxXYXY) -> RGBArray:
    """The box (pixels of the original image) cut from `image.pixels`, which may be a reduced
    (draft) decode: the box is scaled into that frame first.

    Whole pixels are taken the way SpeciesNet does, truncating the corner and the size, and at
    least one pixel each way so a sliver of a box still yields a crop.
    """
    scale_x, scale_y = image.scale
    rows, cols = image.pixels.shape[:2]
    x1, y1, x2, y2 = xyxy
    left = min(int(x1 / scale_x), cols - 1)
    top = min(int(y1 / scale_y), rows - 1)
    width = max(int((x2 - x1) / scale_x), 1)
    height = max(int((y2 - y1) / scale_y), 1)
    return image.pixels[top : top + height, left : left + width]


def prepare_crop(card: ModelCard, image: DecodedImage, xyxy: BoxXYXY) -> FloatArray:
    """One crop as the classifier's input tensor (without the batch dimension)."""
    pixels = crop_pixels(image, xyxy)
    if card.pre.resize == "stretch":
        canvas = stretch(pixels, card.input_size)
    else:
        canvas, _ = letterbox(pixels, card.input_size, card.pre)
    return to_tensor(canvas, card.pre)


def prepare_crops(
    card: ModelCard, image: DecodedImage, boxes: Sequence[BoxXYXY]
) -> list[FloatArray]:
    """All crops of one image: one CPU job per image rather than one per box."""
    return [prepare_crop(card, image, box) for box in boxes]


def softmax(logits: FloatArray) -> FloatArray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    result: FloatArray = (shifted / shifted.sum(axis=-1, keepdims=True)).astype(np.float32)
    return result


def top_k(scores: FloatArray, k: int) -> list[tuple[int, float]]:
    """The `k` best (label index, score) pairs, best first; ties keep the label order."""
    order = np.argsort(-scores, kind="stable")[:k]
    return [(int(i), float(scores[i])) for i in order]


class Classifier:
    """A classify card's graph. `classify` takes crops and returns one score row per crop."""

    def __init__(self, card: ModelCard, model: OnnxModel, label_count: int) -> None:
        self.card = card
        self.model = model
        self.label_count = label_count
        width = model.session.get_outputs()[0].shape[-1]
        # Checked up front where the graph says: a label list of another model version would
        # otherwise name every output wrongly without any error.
        if isinstance(width, int):
            self._check_width(width)

    def classify(self, crops: list[FloatArray]) -> list[FloatArray]:
        if not crops:
            return []
        rows = [outputs[0].reshape(-1) for outputs in self.model.run(np.stack(crops))]
        for row in rows:
            self._check_width(len(row))
        return [softmax(row) if self.card.softmax else row.astype(np.float32) for row in rows]

    def _check_width(self, width: int) -> None:
        if width != self.label_count:
            raise BatchVisionError(
                ErrorCode.MODEL_UNAVAILABLE,
                f"model '{self.card.name}' gives {width} scores but its label list "
                f"{self.card.labels} has {self.label_count} entries: they do not belong together",
            )
