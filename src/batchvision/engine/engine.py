"""Execution: bounded worker pools, admission control, and one dynamic batcher per model."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

from batchvision.core.errors import BatchVisionError, ErrorCode
from batchvision.core.settings import Settings
from batchvision.engine.batcher import DynamicBatcher
from batchvision.models.decoders import DecodeParams, Detections
from batchvision.models.detector import PreparedImage
from batchvision.models.preprocess import FloatArray
from batchvision.models.registry import ModelRegistry

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")
U = TypeVar("U")

DetectItem = tuple[PreparedImage, DecodeParams]


class Engine:
    """Owns every thread that does image or model work.

    CPU work (decoding, resizing) runs on `worker_threads` threads; model runs have their own
    small pool so decoding the next batch overlaps with inference of the current one.
    """

    def __init__(self, settings: Settings, registry: ModelRegistry) -> None:
        self.settings = settings
        self.registry = registry
        self.cpu_pool = ThreadPoolExecutor(settings.worker_threads, thread_name_prefix="bv-cpu")
        self.model_pool = ThreadPoolExecutor(2, thread_name_prefix="bv-model")
        self._batchers: dict[str, DynamicBatcher[DetectItem, Detections]] = {}
        self._classifier_batchers: dict[str, DynamicBatcher[FloatArray, FloatArray]] = {}
        self._in_flight = 0

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @contextmanager
    def admit(self, images: int) -> Iterator[None]:
        """Reserve room for `images`; refuse with `overloaded` rather than queue without bound."""
        limit = self.settings.max_queued_images
        if self._in_flight and self._in_flight + images > limit:
            raise BatchVisionError(
                ErrorCode.OVERLOADED,
                f"server is at capacity ({self._in_flight} images in flight); retry shortly",
                retry_after_s=self.settings.retry_after_s,
            )
        self._in_flight += images
        try:
            yield
        finally:
            self._in_flight -= images

    async def run_cpu(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.cpu_pool, functools.partial(fn, *args, **kwargs))

    def detector_batcher(self, model: str) -> DynamicBatcher[DetectItem, Detections]:
        return _cached_batcher(
            self._batchers, model, lambda items: self.registry.get(model).detect(items), self
        )

    def classifier_batcher(self, model: str) -> DynamicBatcher[FloatArray, FloatArray]:
        """Crops in, score rows out: crops of every image in flight share model runs."""
        return _cached_batcher(
            self._classifier_batchers,
            model,
            lambda crops: self.registry.classifier(model).classify(crops),
            self,
        )

    async def close(self) -> None:
        for batcher in self._batchers.values():
            await batcher.close()
        for classifier in self._classifier_batchers.values():
            await classifier.close()
        self._batchers.clear()
        self._classifier_batchers.clear()
        self.cpu_pool.shutdown(wait=False, cancel_futures=True)
        self.model_pool.shutdown(wait=False, cancel_futures=True)


def _cached_batcher(
    cache: dict[str, DynamicBatcher[T, U]],
    model: str,
    run: Callable[[list[T]], Sequence[U]],
    engine: Engine,
) -> DynamicBatcher[T, U]:
    """One batcher per model, made on first use, running on the model pool."""
    if model not in cache:
        cache[model] = DynamicBatcher(
            run,
            executor=engine.model_pool,
            max_batch_size=engine.settings.max_batch_size,
            max_wait_ms=engine.settings.max_wait_ms,
        )
    return cache[model]
