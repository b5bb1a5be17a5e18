"""The dynamic batcher merges concurrent callers, keeps order, and checks the batch contract."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from batchvision.engine.batcher import BatchContractError, DynamicBatcher


def _run(coro):
    return asyncio.run(coro)


def test_concurrent_items_merge_into_batches_in_order() -> None:
    seen: list[list[int]] = []

    def square(items: list[int]) -> list[int]:
        seen.append(list(items))
        return [i * i for i in items]

    async def main() -> list[int]:
        with ThreadPoolExecutor(1) as pool:
            batcher = DynamicBatcher(square, executor=pool, max_batch_size=4, max_wait_ms=50)
            results = await asyncio.gather(*(batcher.submit(i) for i in range(10)))
            await batcher.close()
            return list(results)

    assert _run(main()) == [i * i for i in range(10)]
    assert [len(batch) for batch in seen] == [4, 4, 2]
    assert [i for batch in seen for i in batch] == list(range(10))


def test_a_lone_item_waits_at_most_max_wait() -> None:
    async def main() -> float:
        with ThreadPoolExecutor(1) as pool:
            batcher = DynamicBatcher(
                lambda xs: xs, executor=pool, max_batch_size=64, max_wait_ms=30
            )
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
            batcher = DynamicBatcher(record, executor=pool, max_batch_size=2, max_wait_ms=1)
            await batcher.submit_many([1, 2, 3])
            await batcher.close()

    _run(main())
    assert threads and all(name.startswith("model") for name in threads)


def test_wrong_result_count_fails_every_item_loudly() -> None:
    async def main() -> None:
        with ThreadPoolExecutor(1) as pool:
            batcher = DynamicBatcher(
                lambda xs: xs[:-1], executor=pool, max_batch_size=3, max_wait_ms=20
            )
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
            batcher = DynamicBatcher(flaky, executor=pool, max_batch_size=8, max_wait_ms=1)
            with pytest.raises(ValueError, match="boom"):
                await batcher.submit(1)
            assert await batcher.submit(2) == 2
            await batcher.close()

    _run(main())
