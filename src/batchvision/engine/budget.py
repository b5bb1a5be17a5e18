"""A budget of bytes (decoded pixels) that callers reserve before they allocate.

The pipeline reserves an image's decoding cost, worked out from its header dimensions, before a
pixel is decoded; the reservation shrinks to what the image keeps once decoded and is returned
when the image's last skill is done. A reservation that does not fit waits, in arrival order, up
to a deadline; one larger than the whole budget can never fit and is refused at once.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from batchvision.core import metrics
from batchvision.core.errors import BatchVisionError, ErrorCode

MB = 1024 * 1024


class Reservation:
    """Bytes held from a budget; `shrink` hands back what is no longer needed."""

    def __init__(self, budget: ByteBudget, nbytes: int) -> None:
        self._budget = budget
        self.nbytes = nbytes

    def shrink(self, nbytes: int) -> None:
        freed = self.nbytes - max(0, nbytes)
        if freed > 0:
            self.nbytes -= freed
            self._budget.release(freed)


class ByteBudget:
    def __init__(self, capacity: int, *, name: str, metered: bool = False) -> None:
        self.capacity = capacity
        self.name = name
        self.metered = metered  # the server's budget, shown in /metrics (not a request's share)
        self._in_use = 0
        # Waiters in arrival order: a large image is not starved by a stream of small ones.
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    @property
    def in_use(self) -> int:
        return self._in_use

    @in_use.setter
    def in_use(self, nbytes: int) -> None:
        if self.metered:
            metrics.DECODED_BYTES_IN_USE.inc(nbytes - self._in_use)
        self._in_use = nbytes

    def fits_ever(self, nbytes: int) -> bool:
        return nbytes <= self.capacity

    @asynccontextmanager
    async def reserve(
        self, nbytes: int, timeout_s: float | None = None
    ) -> AsyncIterator[Reservation]:
        """Hold `nbytes` for the block; wait for room at most `timeout_s` (None: no deadline)."""
        if not self.fits_ever(nbytes):
            raise self.never_fits(nbytes)
        await self._acquire(nbytes, timeout_s)
        reservation = Reservation(self, nbytes)
        try:
            yield reservation
        finally:
            reservation.shrink(0)

    async def _acquire(self, nbytes: int, timeout_s: float | None) -> None:
        if not self._waiters and self.in_use + nbytes <= self.capacity:
            self.in_use += nbytes
            return
        entry = (nbytes, asyncio.get_running_loop().create_future())
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(timeout_s):
                await entry[1]
        except BaseException as exc:
            self._withdraw(entry)
            if isinstance(exc, TimeoutError):
                if self.metered:
                    metrics.ADMISSION_REFUSALS.labels(reason="decoded_budget").inc()
                raise self.busy() from None
            raise

    def _withdraw(self, entry: tuple[int, asyncio.Future[None]]) -> None:
        nbytes, future = entry
        if future.done() and not future.cancelled():
            self.release(nbytes)  # granted in the same instant the deadline struck
        elif entry in self._waiters:
            self._waiters.remove(entry)
        self._wake()

    def release(self, nbytes: int) -> None:
        self.in_use -= nbytes
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            nbytes, future = self._waiters[0]
            if future.done():
                self._waiters.popleft()
            elif self.in_use + nbytes <= self.capacity:
                self._waiters.popleft()
                self.in_use += nbytes
                future.set_result(None)
            else:
                return

    def never_fits(self, nbytes: int) -> BatchVisionError:
        return BatchVisionError(
            ErrorCode.IMAGE_TOO_LARGE,
            f"decoding this image needs {_mb(nbytes)} MB of memory; the {self.name} is "
            f"{_mb(self.capacity)} MB",
        )

    def busy(self) -> BatchVisionError:
        return BatchVisionError(
            ErrorCode.OVERLOADED,
            f"the server's {self.name} stayed full while this image waited; retry shortly",
        )


def _mb(nbytes: int) -> int:
    return -(-nbytes // MB)
