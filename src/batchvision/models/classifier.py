"""A classifier run on detector crops (SpeciesNet's `always_crop` model and its kind).

Each crop is the detection box cut out of the decoded image and resized to the card's input
(`stretch` or `letterbox`), in the card's layout, channel order and scale. The model returns one
score per line of the card's label list, in that order; `softmax = true` cards return logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import numpy as np

from batchvision.core.errors import BatchVisionError, ErrorCode
from batchvision.core.types import DecodedImage, RGBArray
from batchvision.models.base import Availability, Model
from batchvision.models.cards import ModelCard
from batchvision.models.files import ModelFiles, estimated_mb, file_availability
from batchvision.models.preprocess import FloatArray, letterbox, stretch, to_tensor
from batchvision.models.runtime import OnnxModel, open_onnx

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
        canvas = stretch(pixels, card.size)
    else:
        canvas, _ = letterbox(pixels, card.size, card.pre)
    return to_tensor(canvas, card.pre)


def softmax(logits: FloatArray) -> FloatArray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    result: FloatArray = (shifted / shifted.sum(axis=-1, keepdims=True)).astype(np.float32)
    return result


def top_k(scores: FloatArray, k: int) -> list[tuple[int, float]]:
    """The `k` best (label index, score) pairs, best first; ties keep the label order."""
    order = np.argsort(-scores, kind="stable")[:k]
    return [(int(i), float(scores[i])) for i in order]


@dataclass(frozen=True)
class Crop:
    image: DecodedImage
    box: BoxXYXY  # pixels of the original image


def _label_list_unavailable(name: str, reason: str) -> BatchVisionError:
    # Not `model_unavailable`: `pull` fetches the model file, never its label list.
    return BatchVisionError(
        ErrorCode.MODEL_UNAVAILABLE,
        f"model '{name}' cannot run: its label list {reason}; install the label list the model "
        "was trained with there",
    )


def label_availability(card: ModelCard, files: ModelFiles, model: Availability) -> Availability:
    """A classifier without its label list cannot name what it sees: not installed."""
    assert isinstance(card.labels, str)  # a classify card's label list path
    assert card.file is not None
    labels = files.find(card.labels, near=card.file)
    if labels is None:
        reason = f"{card.labels} is in no model directory"
        return Availability(
            "missing", reason, model.path, error=_label_list_unavailable(card.name, reason)
        )
    if not files.checksum_ok(labels, card.labels_sha256):
        reason = f"{labels} does not match its labels_sha256"
        error = _label_list_unavailable(card.name, reason)
        return Availability("checksum_mismatch", reason, model.path, labels, error=error)
    classes = files.fact(labels, count_labels)
    return Availability("installed", model.detail, model.path, labels, classes)


class OnnxClassifier(Model[Crop, FloatArray, FloatArray, FloatArray]):
    """A classify card's graph: one score row per crop, in the order of its label list."""

    task = "classify"
    family = "speciesnet"

    def __init__(self, card: ModelCard, model: OnnxModel, label_count: int) -> None:
        super().__init__(card)
        self.model = model
        self.label_count = label_count
        width = model.session.get_outputs()[0].shape[-1]
        # Checked up front where the graph says: a label list of another model version would
        # otherwise name every output wrongly without any error.
        if isinstance(width, int):
            self._check_width(width)

    @classmethod
    def inspect(cls, card: ModelCard, files: ModelFiles) -> Availability:
        model = file_availability(card, files, classes=None)
        return model if model.error is not None else label_availability(card, files, model)

    @classmethod
    def load(cls, card: ModelCard, files: ModelFiles) -> Self:
        found = cls.inspect(card, files).require()
        assert found.path is not None
        assert found.classes is not None
        return cls(card, open_onnx(found.path, files.settings), found.classes)

    def memory_mb(self) -> int:
        return estimated_mb(self.model.path)

    def preprocess(self, item: Crop) -> FloatArray:
        return prepare_crop(self.card, item.image, item.box)

    def predict(self, batch: list[FloatArray]) -> Sequence[FloatArray]:
        rows = [outputs[0].reshape(-1) for outputs in self.model.run(np.stack(batch))]
        for row in rows:
            self._check_width(len(row))
        return rows

    def postprocess(self, raw: FloatArray, item: FloatArray) -> FloatArray:
        return softmax(raw) if self.card.softmax else raw.astype(np.float32)

    def _check_width(self, width: int) -> None:
        if width != self.label_count:
            raise BatchVisionError(
                ErrorCode.MODEL_UNAVAILABLE,
                f"model '{self.card.name}' gives {width} scores but its label list "
                f"{self.card.labels} has {self.label_count} entries: they do not belong together",
            )
