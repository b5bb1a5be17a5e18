"""Execution: bounded worker pools, admission control, and one dynamic batcher per model.

The engine knows no model kinds: every model is `preprocess` on the CPU pool, then a batch of
items from every caller through that model's batcher, then the model's own `infer` (see
`models.base`). How a model batches comes from its kind (`Model.batching`).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

from batchvision.core import metrics
from batchvision.core.errors import BatchVisionError, ErrorCode
from batchvision.core.settings import Settings
from batchvision.engine.batcher import DynamicBatcher
from batchvision.engine.budget import MB, ByteBudget
from batchvision.models.base import AnyModel, Pools
from batchvision.models.registry import ModelRegistry

P = ParamSpec("P")
R = TypeVar("R")


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
        self.pools = Pools(cpu=self.cpu_pool, model=self.model_pool)
        self._batchers: dict[str, DynamicBatcher[Any, Any]] = {}
        self._in_flight = 0
        self._queued: dict[str, int] = {}
        self.decoded = ByteBudget(
            settings.max_decoded_mb * MB,
            name="server's decoded-pixel budget (max_decoded_mb)",
            metered=True,
        )
        metrics.DECODED_BYTES_CAPACITY.set(self.decoded.capacity)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @contextmanager
    def admit(self, images: int) -> Iterator[None]:
        """Reserve room for `images`; refuse with `overloaded` rather than queue without bound."""
        limit = self.settings.max_queued_images
        if self._in_flight and self._in_flight + images > limit:
            metrics.ADMISSION_REFUSALS.labels(reason="images_in_flight").inc()
            raise BatchVisionError(
                ErrorCode.OVERLOADED,
                f"server is at capacity ({self._in_flight} images in flight); retry shortly",
                retry_after_s=self.settings.retry_after_s,
            )
        self._in_flight += images
        metrics.IMAGES_IN_FLIGHT.inc(images)
        try:
            yield
        finally:
            self._in_flight -= images
            metrics.IMAGES_IN_FLIGHT.dec(images)

    @contextmanager
    def admit_models(self, names: Sequence[str], items: int) -> Iterator[None]:
        """Reserve `items` in the queue of every model in `names`; refuse with `overloaded`
        when one that bounds its queue (remote models, `Batching.max_queued`) is full. What is
        reserved tells each model's batcher how many items are still on their way."""
        names = list(dict.fromkeys(names))
        bounded = {n: limit for n in names if (limit := self.registry.batching(n).max_queued)}
        for name, limit in bounded.items():
            queued = self._queued.get(name, 0)
            if queued and queued + items > limit:
                metrics.ADMISSION_REFUSALS.labels(reason="model_queue").inc()
                raise BatchVisionError(
                    ErrorCode.OVERLOADED,
                    f"model '{name}' is at capacity ({queued} images queued); retry shortly",
                    retry_after_s=self.settings.retry_after_s,
                )
        for name in names:
            self._queued[name] = self._queued.get(name, 0) + items
        for name in bounded:
            metrics.MODEL_QUEUED.labels(model=name).inc(items)
        try:
            yield
        finally:
            for name in names:
                self._queued[name] -= items
            for name in bounded:
                metrics.MODEL_QUEUED.labels(model=name).dec(items)

    def queued(self, name: str) -> int:
        """Images reserved in model `name`'s queue (waiting or in flight)."""
        return self._queued.get(name, 0)

    async def run_cpu(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.cpu_pool, functools.partial(fn, *args, **kwargs))

    async def infer(self, name: str, item: Any) -> Any:
        """One item through model `name`: its kind's input in, its kind's result out."""
        model = await self.model(name)
        prepared = await self.run_cpu(model.preprocess, item)
        return await self.batcher(name).submit(prepared)

    async def infer_many(self, name: str, items: Sequence[Any]) -> list[Any]:
        """Items prepared in one CPU job (the crops of one image), then batched with everyone
        else's items for the same model."""
        model = await self.model(name)
        prepared = await self.run_cpu(_preprocess_all, model, items)
        return await self.batcher(name).submit_many(prepared)

    async def model(self, name: str) -> AnyModel:
        """The loaded model: a table lookup once loaded; the first load (ONNX sessions take
        a while to build) runs on the model pool."""
        loaded = self.registry.loaded(name)
        if loaded is not None:
            return loaded
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.model_pool, self.registry.model, name)

    def batcher(self, name: str) -> DynamicBatcher[Any, Any]:
        """The one batcher of model `name`, made on first use with its kind's batching."""
        if name not in self._batchers:
            batching = self.registry.batching(name)
            self._batchers[name] = DynamicBatcher(
                functools.partial(self._run_batch, name),
                name=name,
                max_batch_size=batching.max_size,
                max_wait_ms=batching.max_wait_ms,
                max_concurrent_batches=batching.concurrency,
                expected=functools.partial(self.queued, name),
            )
        return self._batchers[name]

    async def _run_batch(self, name: str, batch: list[Any]) -> list[Any]:
        # Looked up per batch: the registry may have unloaded the model to stay in budget.
        model = await self.model(name)
        metrics.BATCH_SIZE.labels(model=name).observe(len(batch))
        with metrics.INFERENCE_SECONDS.labels(model=name).time():
            return await model.infer(batch, self.pools)

    async def close(self) -> None:
        for batcher in self._batchers.values():
            await batcher.close()
        self._batchers.clear()
        self.cpu_pool.shutdown(wait=False, cancel_futures=True)
        self.model_pool.shutdown(wait=False, cancel_futures=True)


def _preprocess_all(model: AnyModel, items: Sequence[Any]) -> list[Any]:
    return [model.preprocess(item) for item in items]
