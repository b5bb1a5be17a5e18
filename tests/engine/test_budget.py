"""The byte budget decoded pixels are admitted under: waiting in order, bounded, shrinking."""

from __future__ import annotations

import asyncio

import pytest

from batchvision.core.errors import BatchVisionError, ErrorCode
from batchvision.engine.budget import MB, ByteBudget


def run(coroutine: object) -> None:
    asyncio.run(coroutine)  # type: ignore[arg-type]


def test_a_reservation_larger_than_the_budget_is_refused_at_once() -> None:
    async def scenario() -> None:
        budget = ByteBudget(10 * MB, name="test budget")
        with pytest.raises(BatchVisionError) as caught:
            async with budget.reserve(11 * MB):
                pass
        assert caught.value.code is ErrorCode.IMAGE_TOO_LARGE
        assert "11 MB" in caught.value.message and "10 MB" in caught.value.message
        assert budget.in_use == 0

    run(scenario())


def test_a_waiter_past_its_deadline_gets_overloaded_and_leaves_the_queue() -> None:
    async def scenario() -> None:
        budget = ByteBudget(10, name="test budget")
        async with budget.reserve(8):
            with pytest.raises(BatchVisionError) as caught:
                async with budget.reserve(5, timeout_s=0.05):
                    pass
            assert caught.value.code is ErrorCode.OVERLOADED
        assert budget.in_use == 0
        async with budget.reserve(10, timeout_s=0.05):
            assert budget.in_use == 10

    run(scenario())


def test_a_small_waiter_does_not_overtake_a_large_one_that_came_first() -> None:
    async def scenario() -> None:
        budget = ByteBudget(10, name="test budget")
        async with budget.reserve(5):
            big = asyncio.create_task(_hold(budget, 9))
            await asyncio.sleep(0.01)
            small = asyncio.create_task(_hold(budget, 1))  # it would fit beside the 5 held
            await asyncio.sleep(0.01)
            assert not big.done() and not small.done()
        await asyncio.wait_for(asyncio.gather(big, small), 1)
        assert budget.in_use == 0

    run(scenario())


def test_shrinking_a_reservation_lets_a_waiter_in() -> None:
    async def scenario() -> None:
        budget = ByteBudget(10, name="test budget")
        async with budget.reserve(10) as held:
            waiter = asyncio.create_task(_hold(budget, 6))
            await asyncio.sleep(0.01)
            assert not waiter.done()
            held.shrink(4)
            await asyncio.wait_for(waiter, 1)
            assert budget.in_use == 4
        assert budget.in_use == 0

    run(scenario())


async def _hold(budget: ByteBudget, nbytes: int) -> None:
    async with budget.reserve(nbytes):
        pass
