"""One way to run a blocking housekeeping call forever at an interval, off the event loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


async def every(interval_s: float, work: Callable[[], object], what: str) -> None:
    """Call `work` on a worker thread, then wait `interval_s`, until cancelled. A failure is
    logged and tried again next time: housekeeping must never take the server down."""
    while True:
        try:
            await asyncio.to_thread(work)
        except Exception:
            log.exception("%s failed; trying again later", what)
        await asyncio.sleep(interval_s)
