"""The synchronous client, over one `httpx.Client` connection pool."""

from __future__ import annotations

import builtins
import contextlib
import os
import time
from collections.abc import Iterable, Iterator, Sequence
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


class Client:
    """A batchvision server's native API.

    with Client("http://127.0.0.1:8080", api_key="bv_...") as bv:
        reply = bv.analyze(["photo.jpg"], ["detect"])
        objects = reply.results[0].outputs["detect"]["objects"]
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
        self.http = httpx.Client(
            base_url=self.base_url, headers=client_headers(api_key), timeout=timeout
        )
        self.jobs = Jobs(self)

    def request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """One call; the reply's JSON object, or BatchVisionAPIError with the server's error."""
        return checked_object(self.http.request(method, path, **kwargs))

    def analyze(
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
            return AnalyzeResponse.from_json(self.request("POST", "/v1/analyze", **body))

    def usage(self, days: int = 30) -> Usage:
        """The calling key's balance and use by day (a server with auth disabled has none)."""
        return Usage.from_json(self.request("GET", "/v1/usage", params={"days": days}))

    def skills(self) -> list[dict[str, Any]]:
        """Each skill's name, description and parameter schema."""
        return list(self.request("GET", "/v1/skills").get("skills") or [])

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Jobs:
    """Batch jobs: `client.jobs.submit(...)`, `.status`, `.list`, `.wait`, `.download`,
    `.cancel`, `.results`."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def submit(
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
        """Start a job from a JSONL file (uploaded in parts of `part_bytes`) or from job lines
        (dicts or JSON text, streamed). `wait`: return only once the job has ended. `progress`:
        upload and job progress on stderr."""
        options = submit_options(callback_url, retention_days, callback_secret)
        if isinstance(source, str | os.PathLike):
            path = Path(source)
            with stderr_progress(
                f"upload {path.name}", path.stat().st_size, unit="bytes", enabled=progress
            ) as bar:
                job = self._upload_file(path, part_bytes, options, bar)
        else:
            with stderr_progress("upload", unit="bytes", enabled=progress) as bar:
                job = self._post_lines(source, options, bar)
        return self.wait(job, poll_s=poll_s, progress=progress) if wait else job

    def status(self, job: Job | str) -> Job:
        return Job.from_json(self._client.request("GET", f"/v1/jobs/{quoted(job_id_of(job))}"))

    def list(self, limit: int | None = None, cursor: str | None = None) -> JobPage:
        """One page of your jobs, newest first; pass `page.next_cursor` for the next."""
        params = {k: v for k, v in (("limit", limit), ("cursor", cursor)) if v is not None}
        return JobPage.from_json(self._client.request("GET", "/v1/jobs", params=params))

    def cancel(self, job: Job | str) -> Job:
        """Ask the server to stop a job; lines already done keep their results."""
        path = f"/v1/jobs/{quoted(job_id_of(job))}/cancel"
        return Job.from_json(self._client.request("POST", path))

    def wait(
        self,
        job: Job | str,
        *,
        poll_s: float = 2.0,
        timeout_s: float | None = None,
        progress: bool = False,
    ) -> Job:
        """Poll until the job has ended (completed, failed, cancelled or expired)."""
        current = job if isinstance(job, Job) else self.status(job)
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
                time.sleep(poll_s)
                current = self.status(current.id)

    def download(self, job: Job | str, directory: str | os.PathLike[str]) -> builtins.list[Path]:
        """An ended job's result files as DIRECTORY/results_<index>.jsonl, in index order;
        each streams to disk and takes its name only once complete."""
        current = self.status(job_id_of(job))  # fresh links, and the job must have ended
        refuse_unended(current)
        target_dir = Path(directory)
        target_dir.mkdir(parents=True, exist_ok=True)
        # The links are signed: they carry their own credential, so the key is not sent along.
        with httpx.Client(timeout=self._client.timeout) as plain:
            return [
                self._fetch(plain, output.url, target_dir / output_name(output.index))
                for output in current.outputs
            ]

    def results(self, job: Job | str) -> Iterator[dict[str, Any]]:
        """Every result line so far, in line order (all of them once the job has ended)."""
        path = f"/v1/jobs/{quoted(job_id_of(job))}/results"
        with self._client.http.stream("GET", path) as reply:
            if reply.is_error:
                reply.read()
                raise BatchVisionAPIError.of(reply)
            for line in reply.iter_lines():
                if line.strip():
                    yield result_line(line)

    # --- the steps ---------------------------------------------------------------------------

    def _upload_file(
        self, path: Path, part_bytes: int, options: dict[str, Any], bar: Progress
    ) -> Job:
        upload = self._client.request("POST", "/v1/uploads")
        route = f"/v1/uploads/{quoted(str(upload['fileId']))}"
        params = {"uploadId": upload["uploadId"]}
        try:
            parts = self._put_parts(path, route, params, part_bytes, bar)
            body = {"parts": parts, **options}
            reply = self._client.request("POST", f"{route}/complete", params=params, json=body)
            return Job.from_json(reply)
        except BaseException:
            self._abort(route, params)
            raise

    def _put_parts(
        self, path: Path, route: str, params: dict[str, Any], part_bytes: int, bar: Progress
    ) -> builtins.list[dict[str, Any]]:
        """Part by part, each streamed with its exact Content-Length, so the server can refuse
        an oversized part before reading it."""
        parts = []
        with path.open("rb") as file:
            for number, length in enumerate(part_lengths(path.stat().st_size, part_bytes), 1):
                reply = self._client.request(
                    "PUT",
                    f"{route}/parts/{number}",
                    params=params,
                    content=_blocks(file, length, bar),
                    headers={"Content-Length": str(length)},
                )
                parts.append({"partNumber": number, "etag": reply["etag"]})
        return parts

    def _abort(self, route: str, params: dict[str, Any]) -> None:
        """Best effort: free the parts already stored (the server would also expire them). A
        refused callback_url, say, fails only at completion, after every part went up."""
        with contextlib.suppress(httpx.HTTPError):
            self._client.http.delete(route, params=params, timeout=ABORT_TIMEOUT_S)

    def _post_lines(self, lines: Iterable[JobLine], options: dict[str, Any], bar: Progress) -> Job:
        content = _counted(jsonl_blocks(lines), bar)
        reply = self._client.request("POST", "/v1/jobs", params=options, content=content)
        return Job.from_json(reply)

    def _fetch(self, plain: httpx.Client, url: str, target: Path) -> Path:
        with plain.stream("GET", str(self._client.http.base_url.join(url))) as reply:
            if reply.is_error:
                reply.read()
                raise BatchVisionAPIError.of(reply)
            with AtomicFile(target) as out:
                for block in reply.iter_bytes(BLOCK):
                    out.write(block)
        return target


def _blocks(file: IO[bytes], length: int, bar: Progress) -> Iterator[bytes]:
    """`length` bytes from the file's current position, a block at a time."""
    left = length
    while left > 0:
        block = read_block(file, left)
        left -= len(block)
        bar.advance(len(block))
        yield block


def _counted(blocks: Iterator[bytes], bar: Progress) -> Iterator[bytes]:
    for block in blocks:
        bar.advance(len(block))
        yield block
