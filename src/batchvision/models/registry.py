"""Find model files, verify them, load them lazily, and unload the least recently used."""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchvision.errors import BatchVisionError, ErrorCode, model_unavailable
from batchvision.models.cards import ModelCard, load_cards
from batchvision.models.detector import Detector
from batchvision.models.runtime import OnnxModel
from batchvision.settings import Settings

log = logging.getLogger(__name__)

MB = 1024 * 1024
# ONNX Runtime holds the weights plus arenas and pre-packed copies; measured RSS growth for the
# shipped detectors is two to four times the file size.
_MEMORY_FACTOR = 4
_MIN_MEMORY_MB = 32


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
            "classes": len(card.class_names()),
            "state": self.state,
            "loaded": self.loaded,
            "path": str(self.path) if self.path else None,
            "url": card.url,
            "sha256": card.sha256,
        }


class ModelRegistry:
    def __init__(self, settings: Settings, cards: dict[str, ModelCard] | None = None) -> None:
        self.settings = settings
        self.cards = cards if cards is not None else load_cards(settings)
        self._loaded: OrderedDict[str, Detector] = OrderedDict()
        self._verified: dict[tuple[Path, int, int], bool] = {}
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

    def _checksum_ok(self, card: ModelCard, path: Path) -> bool:
        if card.sha256 is None or not self.settings.verify_model_checksums:
            return True
        stat = path.stat()
        key = (path.resolve(), stat.st_size, stat.st_mtime_ns)
        with self._lock:
            if key not in self._verified:
                self._verified[key] = sha256_of(path) == card.sha256
            return self._verified[key]

    def status(self, card: ModelCard) -> ModelStatus:
        path = self.find_file(card)
        if path is None:
            state = "missing"
        else:
            state = "installed" if self._checksum_ok(card, path) else "checksum_mismatch"
        return ModelStatus(card, path, state, card.name in self._loaded)

    def require(self, name: str) -> Path:
        """The verified file for `name`, or a model_unavailable error naming the pull command."""
        card = self.card(name)
        path = self.find_file(card)
        if path is None:
            raise model_unavailable(name)
        if not self._checksum_ok(card, path):
            raise model_unavailable(name, f"file {path.name} does not match its sha256")
        return path

    def get(self, name: str) -> Detector:
        with self._lock:
            if name in self._loaded:
                self._loaded.move_to_end(name)
                return self._loaded[name]
            path = self.require(name)
            card = self.cards[name]
            model = OnnxModel(
                path,
                intra_threads=self.settings.ort_intra_op_threads,
                inter_threads=self.settings.ort_inter_op_threads,
            )
            detector = Detector(card, model)
            self._loaded[name] = detector
            log.info("loaded model %s from %s (batchable=%s)", name, path, model.batchable)
            self._evict_over_budget()
            return detector

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
