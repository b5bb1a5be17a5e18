"""Which class runs a card: chosen by the card's `task` and `family`, never guessed.

To add a kind: write a `Model` subclass declaring `task` and `family` (see `models.base`), list it
in `KIND_CLASSES`, and ship or write a card naming that task and family. Nothing else changes: the
registry loads it by card and the engine batches it like every other model.
"""

from __future__ import annotations

from collections.abc import Mapping

from batchvision.models.base import AnyModel
from batchvision.models.cards import CardError, ModelCard
from batchvision.models.classifier import OnnxClassifier
from batchvision.models.detector import (
    DetrDetector,
    UltralyticsDetector,
    Yolov5Detector,
    YoloxDetector,
)
from batchvision.models.ocr.kinds import PpOcrModel, TesseractModel
from batchvision.models.synthetic import BinaryImageClassifier
from batchvision.models.vlm.kinds import VLM_KINDS

Kinds = Mapping[tuple[str, str], type[AnyModel]]

KIND_CLASSES: tuple[type[AnyModel], ...] = (
    YoloxDetector,
    UltralyticsDetector,
    Yolov5Detector,
    DetrDetector,
    OnnxClassifier,
    TesseractModel,
    PpOcrModel,
    BinaryImageClassifier,
    *VLM_KINDS,
)

KINDS: Kinds = {(kind.task, kind.family): kind for kind in KIND_CLASSES}


def kind_of(card: ModelCard, kinds: Kinds = KINDS) -> type[AnyModel]:
    try:
        return kinds[(card.task, card.family)]
    except KeyError:
        known = ", ".join(f"{task}/{family}" for task, family in sorted(kinds))
        raise CardError(
            f"model card '{card.name}': no model kind has task '{card.task}' and family "
            f"'{card.family}'; known kinds (task/family): {known}"
        ) from None
