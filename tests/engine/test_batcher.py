"""The dynamic batcher merges concurrent callers, keeps order, bounds the batches in flight, and
checks the batch contract."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from batchvision.engine.batcher import DynamicBatcher
from batchvision.models.base import BatchContractError


def _run(coro):
    return asyncio.run(coro)


def on(pool: ThreadPoolExecutor, fn: Callable[[list], list]) -> Callable:
    """`fn` as a batch function that runs on `pool`, the way a local model's `infer` does."""

    async def run(items: list) -> list:
        return await asyncio.get_running_loop().run_in_executor(pool, fn, items)

    return run


def test_concurrent_items_merge_into_batches_in_order() -> None:
    seen: list[list[int]] = []

    def square(items: list[int]) -> list[int]:
        seen.append(list(items))
        return [i * i for i in items]

    async def main() -> list[int]:
        with ThreadPoolExecutor(1) as pool:
            batcher = DynamicBatcher(on(pool, square), max_batch_size=4, max_wait_ms=50)
            results = await asyncio.gather(*(batcher.submit(i) for i in range(10)))
            await batcher.close()
            return list(results)

    assert _run(main()) == [i * i for i in range(10)]
    assert [len(batch) for batch in seen] == [4, 4, 2]
    assert [i for batch in seen for i in batch] == list(range(10))


def test_a_lone_item_waits_at_most_max_wait() -> None:
    async def main() -> float:
        with ThreadPoolExecutor(1) as pool:
            batcher = DynamicBatcher(on(pool, lambda xs: xs), max_batch_size=64, max_wait_ms=30)
            loop = asyncio.get_running_loop()
            start = loop.time()
            assert await batcher.submit("x") == "x"
            took = loop.time() - start
            await batcher.close()
            return took

    assert _run(main()) < 1.0


def test_batch_function_runs_off_the_event_loop() -> None:
    threads: list[str] = []

    def record(items: list[int]) -> list[int]:
        threads.append(threading.current_thread().name)
        return items

    async def main() -> None:
        with ThreadPoolExecutor(1, thread_name_prefix="model") as pool:
            batcher = DynamicBatcher(on(pool, record), max_batch_size=2, max_wait_ms=1)
            await batcher.submit_many([1, 2, 3])
            await batcher.close()

    _run(main())
    assert threads and all(name.startswith("model") for name in threads)


def test_wrong_result_count_fails_every_item_loudly() -> None:
    async def main() -> None:
        with ThreadPoolExecutor(1) as pool:
            batcher = DynamicBatcher(on(pool, lambda xs: xs[:-1]), max_batch_size=3, max_wait_ms=20)
            try:
                results = await asyncio.gather(
                    *(batcher.submit(i) for i in range(3)), return_exceptions=True
                )
            finally:
                await batcher.close()
            assert all(isinstance(r, BatchContractError) for r in results)

    _run(main())


def test_a_failing_batch_fails_its_items_and_the_next_batch_still_runs() -> None:
    calls = 0

    def flaky(items: list[int]) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ValueError("boom")
        return items

    async def main() -> None:
        with ThreadPoolExecutor(1) as pool:
            batcher = DynamicBatcher(on(pool, flaky), max_batch_size=8, max_wait_ms=1)
            with pytest.raises(ValueError, match="boom"):
                await batcher.submit(1)
            assert await batcher.submit(2) == 2
            await batcher.close()

    _run(main())


def test_awaited_batches_stay_within_the_concurrency_bound() -> None:
    """A remote model's batch is awaited on the event loop (an HTTP call); the batcher keeps
    at most `max_concurrent_batches` of them in flight."""
    in_flight = peak = 0

    async def remote(items: list[int]) -> list[int]:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.02)
        in_flight -= 1
        return items

    async def main() -> list[int]:
        batcher = DynamicBatcher(remote, max_batch_size=1, max_wait_ms=0, max_concurrent_batches=3)
        results = await batcher.submit_many(list(range(12)))
        await batcher.close()
        return results

    assert _run(main()) == list(range(12))
    assert peak == 3


def test_a_lone_item_runs_at_once_when_nothing_else_is_expected() -> None:
    """A window of a minute, yet the lone expected item does not wait it out."""

    async def main() -> int:
        with ThreadPoolExecutor(1) as pool:
            batcher = DynamicBatcher(
                on(pool, lambda xs: xs), max_batch_size=8, max_wait_ms=60_000, expected=lambda: 1
            )
            assert await asyncio.wait_for(batcher.submit("x"), 10) == "x"
            await batcher.close()
            return batcher.batches_run

    assert _run(main()) == 1


def test_an_item_still_expected_joins_the_open_batch_which_then_closes() -> None:
    seen: list[list[str]] = []

    def record(items: list[str]) -> list[str]:
        seen.append(list(items))
        return items

    async def main() -> list[str]:
        with ThreadPoolExecutor(1) as pool:
            batcher = DynamicBatcher(
                on(pool, record), max_batch_size=8, max_wait_ms=60_000, expected=lambda: 2
            )
            first = asyncio.ensure_future(batcher.submit("a"))
            await asyncio.sleep(0.05)  # "b" is still being prepared: the batch waits for it
            assert not first.done()
            second = await asyncio.wait_for(batcher.submit("b"), 10)  # then it closes at once
            results = [await first, second]
            await batcher.close()
            return results

    assert _run(main()) == ["a", "b"]
    assert seen == [["a", "b"]]
