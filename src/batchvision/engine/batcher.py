"""Dynamic batching: concurrent callers' items merge into one model call.

The first item opens a batch; the batch closes when it holds `max_batch_size` items or
`max_wait_ms` have passed, whichever comes first — or at once when nothing else is on its way.
`expected` (the engine's count of items that admitted requests will bring this model) tells: the
wait only pays when some other caller is still decoding or preparing an item that could join, so
a lone request runs with no batch window at all (as Triton's dynamic batcher, whose queue delay
applies only while a preferred batch can still form). Without `expected`, a batch always waits
out its window. The batch function is awaited, at most
`max_concurrent_batches` at a time: it puts its work where it belongs (a pool thread for a local
model, an HTTP call for a remote one) and must return exactly one result per item, in order.
How long each item waited for its batch to start is recorded under the batcher's `name`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from batchvision.core import metrics
from batchvision.models.base import check_count

In = TypeVar("In")
Out = TypeVar("Out")


@dataclass
class _Pending(Generic[In, Out]):
    item: In
    future: asyncio.Future[Out]
    queued_at: float  # the event loop's clock


class DynamicBatcher(Generic[In, Out]):
    def __init__(
        self,
        fn: Callable[[list[In]], Awaitable[Sequence[Out]]],
        *,
        max_batch_size: int,
        max_wait_ms: float,
        max_concurrent_batches: int = 1,
        name: str = "",
        expected: Callable[[], int] | None = None,
    ) -> None:
        self._fn = fn
        self._expected = expected
        self._callers = 0  # callers awaiting a result: queued, batched or in a running batch
        self.name = name
        self._max_batch_size = max_batch_size
        self._max_wait_s = max_wait_ms / 1000.0
        self._queue: asyncio.Queue[_Pending[In, Out]] = asyncio.Queue()
        self._slots = asyncio.Semaphore(max_concurrent_batches)
        self._collector: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self.batches_run = 0

    async def submit(self, item: In) -> Out:
        self._ensure_collector()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Out] = loop.create_future()
        self._callers += 1
        try:
            await self._queue.put(_Pending(item, future, loop.time()))
            return await future
        finally:
            self._callers -= 1

    async def submit_many(self, items: Sequence[In]) -> list[Out]:
        return list(await asyncio.gather(*(self.submit(item) for item in items)))

    def _ensure_collector(self) -> None:
        if self._collector is None or self._collector.done():
            self._collector = asyncio.get_running_loop().create_task(self._collect_forever())

    async def _collect_forever(self) -> None:
        while True:
            await self._slots.acquire()
            batch = await self._next_batch()
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _next_batch(self) -> list[_Pending[In, Out]]:
        batch = [await self._queue.get()]
        deadline = asyncio.get_running_loop().time() + self._max_wait_s
        while len(batch) < self._max_batch_size:
            # Take what is already queued without waiting; only then wait out the deadline.
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            if not self._more_coming():
                break
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return [p for p in batch if not p.future.cancelled()]

    def _more_coming(self) -> bool:
        """Whether an item not yet submitted may still join: admitted requests expect more
        items for this model than it holds. Items no request reserved (the engine used
        directly) tell nothing: the batch waits out its window, as without `expected`."""
        if self._expected is None:
            return True
        expected = self._expected()
        return expected == 0 or expected > self._callers

    async def _run(self, batch: list[_Pending[In, Out]]) -> None:
        try:
            if not batch:
                return
            items = [p.item for p in batch]
            self._record_waits(batch)
            try:
                results = await self._fn(items)
                check_count(results, items, "batch function")
            except Exception as exc:
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(exc)
                return
            for pending, result in zip(batch, results, strict=True):
                if not pending.future.done():
                    pending.future.set_result(result)
        finally:
            self.batches_run += 1
            self._slots.release()

    def _record_waits(self, batch: list[_Pending[In, Out]]) -> None:
        now = asyncio.get_running_loop().time()
        waited = metrics.BATCHER_WAIT_SECONDS.labels(model=self.name)
        for pending in batch:
            waited.observe(now - pending.queued_at)

    async def close(self) -> None:
        if self._collector is not None:
            self._collector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._collector
        for task in list(self._running):
            with contextlib.suppress(Exception):
                await task
