"""One model contract for every kind: `preprocess` → `predict` → `postprocess`.

The engine runs `preprocess` on its CPU pool, one item at a time (or one CPU job for a group of
items, e.g. the crops of one image); merges items of concurrent callers into one batch; and awaits
`infer` for that batch. `infer` runs `run_batch` (batched `predict`, its result count checked, then
`postprocess` per item) on the pool the kind names in `runs_on`.

A kind is a subclass that declares its card `task` and `family` (see `models.kinds`), says whether
a card of it can run here without loading it (`inspect`), and loads itself (`load`).

A remote kind (a vision-language model behind an HTTP server) subclasses `RemoteModel`: its
`infer` awaits the HTTP call on the event loop instead of using a pool, and it returns its
concurrency from `batching`: the engine's batcher never has more batches of one model in flight
than that, which bounds the calls to the server without a semaphore of its own. Nothing in the
engine changes for it.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Sequence, Sized
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, Self, TypeVar

from batchvision.core.errors import BatchVisionError
from batchvision.core.settings import Settings
from batchvision.models.cards import ModelCard

if TYPE_CHECKING:  # files.py builds Availability values from this module
    from batchvision.models.files import ModelFiles

In = TypeVar("In")
Prepared = TypeVar("Prepared")
Raw = TypeVar("Raw")
Out = TypeVar("Out")


class BatchContractError(RuntimeError):
    """A batch step broke the one-result-per-item contract."""


def check_count(results: Sized, items: Sized, what: str) -> None:
    """One result per item, or a loud error: a short batch would shift every later answer."""
    if len(results) != len(items):
        raise BatchContractError(f"{what} returned {len(results)} results for {len(items)} items")


@dataclass(frozen=True)
class Batching:
    """How the engine batches one model: the batch size, how long the first item waits for
    company, and how many batches of the model may be in flight at once."""

    max_size: int
    max_wait_ms: float
    concurrency: int = 1
    # Items waiting or in flight past which a request is refused `overloaded` (None: only the
    # engine's image bound applies). Remote models set it: their queue drains at the server's pace.
    max_queued: int | None = None


@dataclass(frozen=True)
class Pools:
    """The engine's executors: `cpu` for image work, `model` for graph runs."""

    cpu: Executor
    model: Executor


@dataclass(frozen=True)
class Availability:
    """Whether a card can run here, found without loading it."""

    state: str  # installed | missing | checksum_mismatch
    detail: str = ""  # where it is, or what is missing and how to get it
    path: Path | None = None  # the model file, for kinds that have one
    labels: Path | None = None  # a classifier's label list
    classes: int | None = None  # how many classes it names, where it names any
    languages: tuple[str, ...] | None = None  # what an OCR engine reads here
    error: BatchVisionError | None = None  # what to raise when asked to run it; None if installed
    head: Path | None = None  # a binary classifier's linear head

    def require(self) -> Availability:
        if self.error is not None:
            raise self.error
        return self


class Model(ABC, Generic[In, Prepared, Raw, Out]):
    """A loaded model of one kind. Subclasses declare `task` and `family` (the card values they
    implement) and fill in the steps; `run_batch` and `infer` are the same for every kind."""

    task: ClassVar[str]
    family: ClassVar[str]
    runs_on: ClassVar[Literal["model", "cpu"]] = "model"

    def __init__(self, card: ModelCard) -> None:
        self.card = card

    @classmethod
    @abstractmethod
    def inspect(cls, card: ModelCard, files: ModelFiles) -> Availability:
        """Whether `card` can run here; cheap enough for every listing and request check."""

    @classmethod
    @abstractmethod
    def load(cls, card: ModelCard, files: ModelFiles) -> Self:
        """The loaded model; raises model_unavailable when `inspect` says it cannot run."""

    @classmethod
    def batching(cls, settings: Settings) -> Batching:
        return Batching(settings.max_batch_size, settings.max_wait_ms)

    @classmethod
    def batching_for(cls, card: ModelCard, settings: Settings) -> Batching:
        """How the engine batches this card; kinds whose limits come from the card override it."""
        return cls.batching(settings)

    @abstractmethod
    def memory_mb(self) -> int:
        """Resident size when the card gives none, for the registry's memory budget."""

    @abstractmethod
    def preprocess(self, item: In) -> Prepared:
        """CPU work for one item (runs on the engine's CPU pool)."""

    @abstractmethod
    def predict(self, batch: list[Prepared]) -> Sequence[Raw]:
        """One raw output per item of the batch, in order."""

    @abstractmethod
    def postprocess(self, raw: Raw, item: Prepared) -> Out:
        """One item's raw output as the kind's result."""

    def run_batch(self, batch: list[Prepared]) -> list[Out]:
        return self.finish(batch, self.predict(batch)) if batch else []

    def finish(self, batch: list[Prepared], raws: Sequence[Raw]) -> list[Out]:
        """The raw outputs checked against the batch, then postprocessed item by item."""
        check_count(raws, batch, f"model '{self.card.name}'")
        return [self.postprocess(raw, item) for raw, item in zip(raws, batch, strict=True)]

    async def infer(self, batch: list[Prepared], pools: Pools) -> list[Out]:
        """`run_batch` off the event loop, on the pool this kind runs on."""
        pool = pools.cpu if self.runs_on == "cpu" else pools.model
        return await asyncio.get_running_loop().run_in_executor(pool, self.run_batch, batch)


class RemoteModel(Model[In, Prepared, Raw, Out]):
    """A model behind a server: `predict_remote` awaits its HTTP call on the event loop, so no
    pool thread waits on the network. Return the calls a server may take at once as the
    concurrency from `batching`; the engine's batcher keeps to it."""

    @abstractmethod
    async def predict_remote(self, batch: list[Prepared]) -> Sequence[Raw]:
        """One raw output per item, from the server."""

    def predict(self, batch: list[Prepared]) -> Sequence[Raw]:
        # For callers outside an event loop (scripts, benchmarks); the engine awaits `infer`.
        return asyncio.run(self.predict_remote(batch))

    async def infer(self, batch: list[Prepared], pools: Pools) -> list[Out]:
        return self.finish(batch, await self.predict_remote(batch)) if batch else []


AnyModel = Model[Any, Any, Any, Any]
