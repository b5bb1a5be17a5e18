"""Cards and the classes that run them; models loaded lazily, the least recently used unloaded.

Each card's kind comes from its `task` and `family` (`models.kinds`); a card no kind runs is
refused when the registry is built. Whether a card can run here is the kind's answer
(`inspect`: a verified file, an engine's installed data), so listings need no loading.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchvision.core.errors import BatchVisionError, ErrorCode, echo
from batchvision.core.settings import Settings
from batchvision.models.base import AnyModel, Availability, Batching
from batchvision.models.cards import ModelCard, load_cards
from batchvision.models.files import ModelFiles
from batchvision.models.kinds import KINDS, Kinds, kind_of

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelStatus:
    card: ModelCard
    found: Availability
    loaded: bool

    @property
    def state(self) -> str:
        return self.found.state

    @property
    def path(self) -> Path | None:
        return self.found.path

    @property
    def classes(self) -> int | None:
        return self.found.classes

    def to_dict(self) -> dict[str, Any]:
        card, found = self.card, self.found
        languages = found.languages
        return {
            "name": card.name,
            "task": card.task,
            "family": card.family,
            "description": card.description,
            "version": card.version,
            "license": card.license,
            "input_size": list(card.input_size) if card.input_size else None,
            "classes": found.classes,
            "languages": list(languages) if languages is not None else None,
            "state": found.state,
            "detail": found.detail,
            "loaded": self.loaded,
            "path": str(found.path) if found.path else None,
            "url": card.url,
            "sha256": card.sha256,
        }


class ModelRegistry:
    def __init__(
        self, settings: Settings, cards: dict[str, ModelCard] | None = None, kinds: Kinds = KINDS
    ) -> None:
        self.settings = settings
        self.cards = cards if cards is not None else load_cards(settings)
        self.files = ModelFiles(settings)
        self._kinds = {name: kind_of(card, kinds) for name, card in self.cards.items()}
        self._loaded: OrderedDict[str, AnyModel] = OrderedDict()
        # `_lock` guards the table and is held only for dict work, so the event loop can look
        # a model up while a pool thread spends seconds in `_loading` building another.
        self._lock = threading.Lock()
        self._loading = threading.Lock()

    def card(self, name: str) -> ModelCard:
        try:
            return self.cards[name]
        except KeyError:
            known = ", ".join(sorted(self.cards))
            raise BatchVisionError(
                ErrorCode.INVALID_PARAMETER, f"unknown model '{echo(name)}'; known models: {known}"
            ) from None

    def kind(self, name: str) -> type[AnyModel]:
        return self._kinds[self.card(name).name]

    def batching(self, name: str) -> Batching:
        """How the engine batches model `name` (its kind's rule applied to its card)."""
        card = self.card(name)
        return self._kinds[card.name].batching_for(card, self.settings)

    def status(self, card: ModelCard) -> ModelStatus:
        found = self._kinds[card.name].inspect(card, self.files)
        return ModelStatus(card, found, card.name in self._loaded)

    def statuses(self) -> list[ModelStatus]:
        """Every card with its state, for `GET /v1/models` and `batchvision models list`."""
        return [self.status(card) for card in self.cards.values()]

    def require(self, name: str) -> Availability:
        """What `name` runs from, or its model_unavailable error (naming what to install)."""
        return self.status(self.card(name)).found.require()

    def require_labels(self, name: str) -> Path:
        """The verified label list of the classifier `name`, or a model_unavailable error."""
        labels = self.require(name).labels
        if labels is None:
            raise BatchVisionError(
                ErrorCode.INVALID_PARAMETER, f"model '{name}' is not a classify model"
            )
        return labels

    def loaded(self, name: str) -> AnyModel | None:
        """The model if it is loaded (and now the most recently used); never loads."""
        with self._lock:
            model = self._loaded.get(name)
            if model is not None:
                self._loaded.move_to_end(name)
            return model

    def model(self, name: str) -> AnyModel:
        """The loaded model `name`, loading it (blocking: call it off the event loop)."""
        card = self.card(name)
        with self._loading:
            model = self.loaded(name)
            if model is None:
                model = self._kinds[name].load(card, self.files)
                log.info("loaded model %s (%s/%s)", name, card.task, card.family)
                with self._lock:
                    self._loaded[name] = model
                    self._evict_over_budget()
            return model

    def loaded_names(self) -> list[str]:
        with self._lock:
            return list(self._loaded)

    def _memory_mb(self, name: str) -> int:
        return self.cards[name].memory_mb or self._loaded[name].memory_mb()

    def _evict_over_budget(self) -> None:
        budget = self.settings.model_memory_budget_mb
        while len(self._loaded) > 1 and sum(map(self._memory_mb, self._loaded)) > budget:
            evicted, _ = self._loaded.popitem(last=False)
            log.info("unloaded model %s (memory budget %d MB)", evicted, budget)
