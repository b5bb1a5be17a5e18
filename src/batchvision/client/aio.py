"""The asynchronous client, over one `httpx.AsyncClient`: the same calls as `Client`, awaited.
File reads and writes run in threads, so a large upload or download never blocks the loop."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import os
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import httpx

from batchvision.client.errors import BatchVisionAPIError, checked_object
from batchvision.client.progress import Progress, stderr_progress
from batchvision.client.results import AnalyzeResponse, Job, JobPage, Usage
from batchvision.client.wire import (
    ABORT_TIMEOUT_S,
    BLOCK,
    DEFAULT_PART_BYTES,
    DEFAULT_URL,
    TIMEOUT,
    JobLine,
    Media,
    TaskSpec,
    VideoSampling,
    analyze_body,
    client_headers,
    job_id_of,
    jsonl_blocks,
    output_name,
    part_lengths,
    quoted,
    read_block,
    refuse_unended,
    result_line,
    submit_options,
    waited_too_long,
)
from batchvision.core.fsutil import AtomicFile


class AsyncClient:
    """A batchvision server's native API, for asyncio code.

    async with AsyncClient("http://127.0.0.1:8080", api_key="bv_...") as bv:
        reply = await bv.analyze(["photo.jpg"], ["detect"])
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        api_key: str | None = None,
        *,
        timeout: httpx.Timeout | float = TIMEOUT,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.http = httpx.AsyncClient(
            base_url=self.base_url, headers=client_headers(api_key), timeout=timeout
        )
        self.jobs = AsyncJobs(self)

    async def request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        return checked_object(await self.http.request(method, path, **kwargs))

    async def analyze(
        self,
        images: Media = (),
        tasks: str | TaskSpec | Sequence[TaskSpec] | None = None,
        *,
        videos: Media = (),
        sampling: VideoSampling | None = None,
    ) -> AnalyzeResponse:
        """Run `tasks` (default detect) over `images` and `videos`: paths, bytes or http(s)
        URLs. Results come back in request order, per image in `results` and per video (its
        sampled frames and a summary, `sampling` choosing the frames) in `videos`."""
        with analyze_body(images, tasks, videos, sampling) as body:
            return AnalyzeResponse.from_json(await self.request("POST", "/v1/analyze", **body))

    async def usage(self, days: int = 30) -> Usage:
        return Usage.from_json(await self.request("GET", "/v1/usage", params={"days": days}))

    async def skills(self) -> list[dict[str, Any]]:
        return list((await self.request("GET", "/v1/skills")).get("skills") or [])

    async def close(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class AsyncJobs:
    """`Jobs`, awaited."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def submit(
        self,
        source: str | os.PathLike[str] | Iterable[JobLine],
        *,
        wait: bool = False,
        progress: bool = False,
        part_bytes: int = DEFAULT_PART_BYTES,
        poll_s: float = 2.0,
        callback_url: str | None = None,
        callback_secret: str | None = None,
        retention_days: int | None = None,
    ) -> Job:
        """See `Jobs.submit`."""
        options = submit_options(callback_url, retention_days, callback_secret)
        if isinstance(source, str | os.PathLike):
            path = Path(source)
            size = path.stat().st_size
            with stderr_progress(
                f"upload {path.name}", size, unit="bytes", enabled=progress
            ) as bar:
                job = await self._upload_file(path, part_bytes, options, bar)
        else:
            with stderr_progress("upload", unit="bytes", enabled=progress) as bar:
                job = await self._post_lines(source, options, bar)
        return await self.wait(job, poll_s=poll_s, progress=progress) if wait else job

    async def status(self, job: Job | str) -> Job:
        reply = await self._client.request("GET", f"/v1/jobs/{quoted(job_id_of(job))}")
        return Job.from_json(reply)

    async def list(self, limit: int | None = None, cursor: str | None = None) -> JobPage:
        params = {k: v for k, v in (("limit", limit), ("cursor", cursor)) if v is not None}
        return JobPage.from_json(await self._client.request("GET", "/v1/jobs", params=params))

    async def cancel(self, job: Job | str) -> Job:
        path = f"/v1/jobs/{quoted(job_id_of(job))}/cancel"
        return Job.from_json(await self._client.request("POST", path))

    async def wait(
        self,
        job: Job | str,
        *,
        poll_s: float = 2.0,
        timeout_s: float | None = None,
        progress: bool = False,
    ) -> Job:
        current = job if isinstance(job, Job) else await self.status(job)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        lines = current.progress
        with stderr_progress(
            current.status, lines.total, unit="lines", completed=lines.done, enabled=progress
        ) as bar:
            while True:
                done, total = current.progress.done, current.progress.total
                bar.update(completed=done, total=total, description=current.status)
                if current.ended:
                    return current
                if deadline is not None and time.monotonic() >= deadline:
                    raise waited_too_long(current, timeout_s or 0.0)
                await asyncio.sleep(poll_s)
                current = await self.status(current.id)

    async def download(
        self, job: Job | str, directory: str | os.PathLike[str]
    ) -> builtins.list[Path]:
        current = await self.status(job_id_of(job))
        refuse_unended(current)
        target_dir = Path(directory)
        target_dir.mkdir(parents=True, exist_ok=True)
        # The links are signed: they carry their own credential, so the key is not sent along.
        async with httpx.AsyncClient(timeout=self._client.timeout) as plain:
            return [
                await self._fetch(plain, output.url, target_dir / output_name(output.index))
                for output in current.outputs
            ]

    async def results(self, job: Job | str) -> AsyncIterator[dict[str, Any]]:
        path = f"/v1/jobs/{quoted(job_id_of(job))}/results"
        async with self._client.http.stream("GET", path) as reply:
            if reply.is_error:
                await reply.aread()
                raise BatchVisionAPIError.of(reply)
            async for line in reply.aiter_lines():
                if line.strip():
                    yield result_line(line)

    # --- the steps ---------------------------------------------------------------------------

    async def _upload_file(
        self, path: Path, part_bytes: int, options: dict[str, Any], bar: Progress
    ) -> Job:
        upload = await self._client.request("POST", "/v1/uploads")
        route = f"/v1/uploads/{quoted(str(upload['fileId']))}"
        params = {"uploadId": upload["uploadId"]}
        try:
            parts = await self._put_parts(path, route, params, part_bytes, bar)
            body = {"parts": parts, **options}
            reply = await self._client.request(
                "POST", f"{route}/complete", params=params, json=body
            )
            return Job.from_json(reply)
        except BaseException:
            await self._abort(route, params)
            raise

    async def _put_parts(
        self, path: Path, route: str, params: dict[str, Any], part_bytes: int, bar: Progress
    ) -> builtins.list[dict[str, Any]]:
        parts = []
        with path.open("rb") as file:
            for number, length in enumerate(part_lengths(path.stat().st_size, part_bytes), 1):
                reply = await self._client.request(
                    "PUT",
                    f"{route}/parts/{number}",
                    params=params,
                    content=_blocks(file, length, bar),
                    headers={"Content-Length": str(length)},
                )
                parts.append({"partNumber": number, "etag": reply["etag"]})
        return parts

    async def _abort(self, route: str, params: dict[str, Any]) -> None:
        with contextlib.suppress(httpx.HTTPError):
            await self._client.http.delete(route, params=params, timeout=ABORT_TIMEOUT_S)

    async def _post_lines(
        self, lines: Iterable[JobLine], options: dict[str, Any], bar: Progress
    ) -> Job:
        content = _counted(jsonl_blocks(lines), bar)
        reply = await self._client.request("POST", "/v1/jobs", params=options, content=content)
        return Job.from_json(reply)

    async def _fetch(self, plain: httpx.AsyncClient, url: str, target: Path) -> Path:
        async with plain.stream("GET", str(self._client.http.base_url.join(url))) as reply:
            if reply.is_error:
                await reply.aread()
                raise BatchVisionAPIError.of(reply)
            with AtomicFile(target) as out:
                async for block in reply.aiter_bytes(BLOCK):
                    await asyncio.to_thread(out.write, block)
        return target


async def _blocks(file: IO[bytes], length: int, bar: Progress) -> AsyncIterator[bytes]:
    left = length
    while left > 0:
        block = await asyncio.to_thread(read_block, file, left)
        left -= len(block)
        bar.advance(len(block))
        yield block


async def _counted(blocks: Iterator[bytes], bar: Progress) -> AsyncIterator[bytes]:
    for block in blocks:
        bar.advance(len(block))
        yield block
