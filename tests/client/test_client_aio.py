"""`batchvision.client.AsyncClient` against the real app over real HTTP: the same calls as the
sync client, awaited, several at once on one connection pool."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from client_support import (
    PHOTO,
    KeyedServer,
    detect_lines,
    keyed_server,
    labels,
    result_lines,
    stalled_photo,
    write_jsonl,
)

from batchvision.client import AsyncClient, BatchVisionAPIError, BatchVisionClientError

T = TypeVar("T")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeyedServer]:
    keyed = keyed_server(tmp_path_factory.mktemp("client-aio"))
    yield keyed
    keyed.stop()


def test_analyze_calls_run_concurrently_and_find_the_objects(server: KeyedServer) -> None:
    async def go() -> list[set[str]]:
        async with AsyncClient(server.url, api_key=server.new_key()) as bv:
            replies = await asyncio.gather(
                bv.analyze([PHOTO], "detect"), bv.analyze(PHOTO.read_bytes())
            )
        return [labels(r.results[0].outputs["detect"]["objects"]) for r in replies]

    found = run(go())
    assert len(found) == 2
    assert all({"person", "tv"} <= objects for objects in found)


def test_submit_a_file_wait_download_and_stream_results(
    server: KeyedServer, tmp_path: Path
) -> None:
    batch = write_jsonl(tmp_path / "batch.jsonl", detect_lines(5))

    async def go() -> tuple[Any, list[Path], list[dict[str, Any]]]:
        async with AsyncClient(server.url, api_key=server.new_key()) as bv:
            job = await bv.jobs.submit(batch, part_bytes=150_000, wait=True, poll_s=0.1)
            paths = await bv.jobs.download(job.id, tmp_path / "out")
            streamed = [line async for line in bv.jobs.results(job)]
        return job, paths, streamed

    job, paths, streamed = run(go())
    assert job.status == "completed" and job.progress.done == 5
    assert [p.name for p in paths] == ["results_0.jsonl", "results_1.jsonl"]
    lines = result_lines(paths)
    assert [line["id"] for line in lines] == [f"x{i}" for i in range(5)]
    assert streamed == lines


def test_submit_lines_list_cancel_and_usage(server: KeyedServer, tmp_path: Path) -> None:
    async def go(url: str) -> dict[str, Any]:
        async with AsyncClient(server.url, api_key=server.new_key()) as bv:
            job = await bv.jobs.submit([{"id": "u", "skill": "detect", "image_url": url}])
            listed = await bv.jobs.list()
            try:
                await bv.jobs.download(job, tmp_path / "out")
            except BatchVisionClientError as exc:
                refused = exc.message
            await bv.jobs.cancel(job.id)
            ended = await bv.jobs.wait(job, poll_s=0.05, timeout_s=15)
            await bv.analyze([PHOTO])
            usage = await bv.usage()
        return {"job": job, "listed": listed, "refused": refused, "ended": ended, "usage": usage}

    with stalled_photo() as url:
        seen = run(go(url))
    assert [j.id for j in seen["listed"].jobs] == [seen["job"].id]
    assert seen["refused"].startswith(f"job {seen['job'].id} is still ")
    assert seen["ended"].status == "cancelled"
    assert seen["usage"].totals["images"] == 1
    assert seen["usage"].balance == "unlimited"


def test_errors_are_BatchVisionAPIError(server: KeyedServer) -> None:
    async def go() -> list[BatchVisionAPIError]:
        errors = []
        async with AsyncClient(server.url) as anonymous:
            try:
                await anonymous.skills()
            except BatchVisionAPIError as exc:
                errors.append(exc)
        async with AsyncClient(server.url, api_key=server.new_key()) as bv:
            for call in (bv.jobs.status("nope"), bv.analyze([PHOTO], [{"skill": "detekt"}])):
                try:
                    await call
                except BatchVisionAPIError as exc:
                    errors.append(exc)
        return errors

    unauthorized, not_found, unknown = run(go())
    assert (unauthorized.status, unauthorized.code) == (401, "unauthorized")
    assert "--api-key or BATCHVISION_API_KEY" in unauthorized.message
    assert (not_found.status, not_found.code) == (404, "not_found")
    assert (unknown.status, unknown.code) == (400, "unknown_skill")
