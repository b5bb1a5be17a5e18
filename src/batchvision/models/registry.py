"""Find model files, verify them, load them lazily, and unload the least recently used."""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchvision.core.errors import BatchVisionError, ErrorCode, model_unavailable
from batchvision.core.settings import Settings
from batchvision.models.cards import ModelCard, load_cards
from batchvision.models.classifier import Classifier, count_labels
from batchvision.models.detector import Detector
from batchvision.models.runtime import OnnxModel

log = logging.getLogger(__name__)

MB = 1024 * 1024
# ONNX Runtime holds the weights plus arenas and pre-packed copies; measured RSS growth for the
# shipped detectors is two to four times the file size.
_MEMORY_FACTOR = 4
_MIN_MEMORY_MB = 32

Loaded = Detector | Classifier


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelStatus:
    card: ModelCard
    path: Path | None
    state: str  # installed | missing | checksum_mismatch
    loaded: bool
    classes: int | None = None  # a classifier's label count, once its label list is found

    def to_dict(self) -> dict[str, Any]:
        card = self.card
        return {
            "name": card.name,
            "task": card.task,
            "family": card.family,
            "description": card.description,
            "version": card.version,
            "license": card.license,
            "input_size": list(card.input_size),
            "classes": self.classes if card.task == "classify" else len(card.class_names()),
            "state": self.state,
            "loaded": self.loaded,
            "path": str(self.path) if self.path else None,
            "url": card.url,
            "sha256": card.sha256,
        }


def _label_list_unavailable(name: str, reason: str) -> BatchVisionError:
    # Not `model_unavailable`: `pull` fetches the model file, never its label list.
    return BatchVisionError(
        ErrorCode.MODEL_UNAVAILABLE,
        f"model '{name}' cannot run: its label list {reason}; install the label list the model "
        "was trained with there",
    )


class ModelRegistry:
    def __init__(self, settings: Settings, cards: dict[str, ModelCard] | None = None) -> None:
        self.settings = settings
        self.cards = cards if cards is not None else load_cards(settings)
        self._loaded: OrderedDict[str, Loaded] = OrderedDict()
        self._verified: dict[tuple[Path, int, int], bool] = {}
        self._label_counts: dict[tuple[Path, int, int], int] = {}
        self._lock = threading.RLock()

    def card(self, name: str) -> ModelCard:
        try:
            return self.cards[name]
        except KeyError:
            known = ", ".join(sorted(self.cards))
            raise BatchVisionError(
                ErrorCode.INVALID_PARAMETER, f"unknown model '{name}'; known models: {known}"
            ) from None

    def find_file(self, card: ModelCard) -> Path | None:
        for directory in self.settings.model_dirs:
            candidate = directory / card.file
            if candidate.is_file():
                return candidate
        return None

    def labels_file(self, card: ModelCard) -> Path | None:
        """A classifier's label list: `labels` looked up like `file`, in the directory holding
        the model file first (a model and its own label list stay together), then the others."""
        if card.task != "classify" or not isinstance(card.labels, str):
            return None
        dirs = list(self.settings.model_dirs)
        home = [d for d in dirs if (d / card.file).is_file()][:1]
        for directory in home + dirs:
            candidate = directory / card.labels
            if candidate.is_file():
                return candidate
        return None

    def _checksum_ok(self, path: Path, expected: str | None) -> bool:
        if expected is None or not self.settings.verify_model_checksums:
            return True
        stat = path.stat()
        key = (path.resolve(), stat.st_size, stat.st_mtime_ns)
        with self._lock:
            if key not in self._verified:
                self._verified[key] = sha256_of(path) == expected
            return self._verified[key]

    def _label_count(self, path: Path) -> int:
        stat = path.stat()
        key = (path.resolve(), stat.st_size, stat.st_mtime_ns)
        with self._lock:
            if key not in self._label_counts:
                self._label_counts[key] = count_labels(path)
            return self._label_counts[key]

    def status(self, card: ModelCard) -> ModelStatus:
        path = self.find_file(card)
        state = self._state(card, path)
        labels = self.labels_file(card) if state == "installed" else None
        classes = self._label_count(labels) if labels is not None else None
        return ModelStatus(card, path, state, card.name in self._loaded, classes)

    def _state(self, card: ModelCard, path: Path | None) -> str:
        if path is None:
            return "missing"
        if not self._checksum_ok(path, card.sha256):
            return "checksum_mismatch"
        if card.task != "classify":
            return "installed"
        # A classifier without its label list cannot name what it sees: not installed.
        labels = self.labels_file(card)
        if labels is None:
            return "missing"
        return "installed" if self._checksum_ok(labels, card.labels_sha256) else "checksum_mismatch"

    def _verified_files(self, card: ModelCard) -> tuple[Path, Path | None]:
        """The model file and (for a classifier) its label list, both found and verified."""
        name = card.name
        path = self.find_file(card)
        if path is None:
            raise model_unavailable(name)
        if not self._checksum_ok(path, card.sha256):
            raise model_unavailable(name, f"file {path.name} does not match its sha256")
        if card.task != "classify":
            return path, None
        labels = self.labels_file(card)
        if labels is None:
            raise _label_list_unavailable(name, f"{card.labels} is in no model directory")
        if not self._checksum_ok(labels, card.labels_sha256):
            raise _label_list_unavailable(name, f"{labels} does not match its labels_sha256")
        return path, labels

    def require(self, name: str) -> Path:
        """The verified file for `name`, or a model_unavailable error naming the pull command."""
        return self._verified_files(self.card(name))[0]

    def require_labels(self, name: str) -> Path:
        """The verified label list of the classifier `name`, or a model_unavailable error."""
        labels = self._verified_files(self.card(name))[1]
        if labels is None:
            raise BatchVisionError(
                ErrorCode.INVALID_PARAMETER, f"model '{name}' is not a classify model"
            )
        return labels

    def get(self, name: str) -> Detector:
        """The loaded detector `name`."""
        model = self._get(name, "detect")
        assert isinstance(model, Detector)
        return model

    def classifier(self, name: str) -> Classifier:
        """The loaded classifier `name`."""
        model = self._get(name, "classify")
        assert isinstance(model, Classifier)
        return model

    def _get(self, name: str, task: str) -> Loaded:
        with self._lock:
            card = self.card(name)
            if card.task != task:
                raise BatchVisionError(
                    ErrorCode.INVALID_PARAMETER, f"model '{name}' is a {card.task} model"
                )
            if name in self._loaded:
                self._loaded.move_to_end(name)
                return self._loaded[name]
            loaded = self._load(card)
            self._loaded[name] = loaded
            log.info(
                "loaded model %s from %s (batchable=%s)",
                name,
                loaded.model.path,
                loaded.model.batchable,
            )
            self._evict_over_budget()
            return loaded

    def _load(self, card: ModelCard) -> Loaded:
        path, labels = self._verified_files(card)
        model = OnnxModel(
            path,
            intra_threads=self.settings.ort_intra_op_threads,
            inter_threads=self.settings.ort_inter_op_threads,
        )
        if labels is None:
            return Detector(card, model)
        return Classifier(card, model, self._label_count(labels))

    def loaded_names(self) -> list[str]:
        with self._lock:
            return list(self._loaded)

    def _memory_mb(self, name: str) -> int:
        card = self.cards[name]
        if card.memory_mb is not None:
            return card.memory_mb
        path = self._loaded[name].model.path
        return max(_MIN_MEMORY_MB, path.stat().st_size * _MEMORY_FACTOR // MB)

    def _evict_over_budget(self) -> None:
        budget = self.settings.model_memory_budget_mb
        while len(self._loaded) > 1 and sum(map(self._memory_mb, self._loaded)) > budget:
            evicted, _ = self._loaded.popitem(last=False)
            log.info("unloaded model %s (memory budget %d MB)", evicted, budget)
