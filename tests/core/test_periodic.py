"""`core.periodic.every`: housekeeping runs again after a failure and stops when cancelled."""

from __future__ import annotations

import asyncio
import logging

import pytest

from batchvision.core.periodic import every


def test_a_failing_call_is_logged_and_tried_again(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []

    def work() -> None:
        calls.append(len(calls))
        if len(calls) == 1:
            raise RuntimeError("disk busy")

    async def main() -> None:
        task = asyncio.create_task(every(0.01, work, "test sweep"))
        while len(calls) < 3:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with caplog.at_level(logging.ERROR, logger="batchvision.core.periodic"):
        asyncio.run(main())
    assert len(calls) >= 3
    assert [r.getMessage() for r in caplog.records] == ["test sweep failed; trying again later"]
