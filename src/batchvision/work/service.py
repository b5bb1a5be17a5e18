"""The jobs entry point every job surface uses: submit, multipart uploads, status, cancel, files.

Surfaces differ in paths, field names, line rules and views — their `JobSurface` hooks, handed
in by the app; what a job *is* lives here and in the runner.
Store and blob calls block, so they run on worker threads; request bodies are streamed to blobs
without ever being held in memory.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

from sqlalchemy import Engine

from batchvision.accounts.scoping import Principal, not_found
from batchvision.core.errors import BatchVisionError, ErrorCode
from batchvision.core.settings import Settings
from batchvision.jobs.blobs import BlobNotFound, Blobs, BlobTooLarge, make_blobs
from batchvision.jobs.callbacks import check_callback_url
from batchvision.jobs.chunks import input_key, output_key
from batchvision.jobs.signing import UrlSigner
from batchvision.jobs.store import FINAL_STATES, JobStore, JobView, new_job_id
from batchvision.jobs.tables import UploadState
from batchvision.jobs.uploads import (
    PartView,
    UploadStore,
    UploadView,
    check_part_number,
    quote_etag,
    same_etag,
)
from batchvision.jobs.views import OutputLinks
from batchvision.pipeline import Pipeline
from batchvision.work.chunks import ChunkWork
from batchvision.work.dispatch import CeleryRunner
from batchvision.work.runner import JobRunner
from batchvision.work.surface import JobSurface

MAX_RETENTION_DAYS = 365
STREAM_BLOCK = 1 << 20


@dataclass(frozen=True)
class JobOptions:
    callback_url: str | None = None
    callback_secret: str | None = None
    retention_days: int | None = None


def parse_options(raw: dict[str, Any]) -> JobOptions:
    """`callback_url`, `callback_secret` and `retention_days` from a query or JSON body."""
    url, secret, days = (
        raw.get("callback_url"),
        raw.get("callback_secret"),
        raw.get("retention_days"),
    )
    if url is not None:
        if not isinstance(url, str):
            raise _bad("callback_url must be a string")
        check_callback_url(url)
    if secret is not None and (not isinstance(secret, str) or not 16 <= len(secret) <= 64):
        raise _bad("callback_secret must be a string of 16 to 64 characters")
    if isinstance(days, str) and days.isdigit():
        days = int(days)
    if days is not None and (
        isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_RETENTION_DAYS
    ):
        raise _bad(f"retention_days must be an integer from 1 to {MAX_RETENTION_DAYS}")
    return JobOptions(url, secret, days)


def _bad(message: str) -> BatchVisionError:
    return BatchVisionError(ErrorCode.INVALID_PARAMETER, message)


def part_too_large(limit: int) -> BatchVisionError:
    return BatchVisionError(
        ErrorCode.PAYLOAD_TOO_LARGE,
        f"part exceeds the limit of {limit} bytes; split the file into smaller parts",
    )


def _bad_parts(message: str) -> BatchVisionError:
    # 400, as S3's InvalidPart / InvalidPartOrder.
    return BatchVisionError(ErrorCode.INVALID_REQUEST, message)


@dataclass(frozen=True)
class Submitted:
    job: JobView
    size: int
    callback_secret: str | None  # shown once, when the server chose it


class JobService:
    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        pipeline: Pipeline,
        surfaces: Mapping[str, JobSurface],
    ) -> None:
        self.settings = settings
        self.surfaces = dict(surfaces)
        self.blobs: Blobs = make_blobs(settings)
        self.store = JobStore(engine)
        self.uploads = UploadStore(engine)
        secret = settings.url_signing_secret
        self.signer = UrlSigner.from_settings(
            settings.data_dir, secret.get_secret_value() if secret else None
        )
        work = ChunkWork.from_settings(settings, self.store, self.blobs, pipeline, self.surfaces)
        runner = CeleryRunner if settings.job_runner == "celery" else JobRunner
        self.runner: JobRunner | CeleryRunner = runner(
            settings, work, self.uploads, self.callback_body
        )

    async def start(self) -> None:
        await self.runner.start()

    async def close(self) -> None:
        await self.runner.close()

    # --- views -----------------------------------------------------------------------------

    def links(self, base_url: str | None = None) -> OutputLinks:
        base = self.settings.public_url or base_url or self._own_url()
        return OutputLinks(base.rstrip("/"), self.signer, self.settings.output_url_ttl_s)

    def _own_url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.port}"

    def view(self, job: JobView, base_url: str | None = None) -> dict[str, Any]:
        return self.surfaces[job.surface].job_view(job, self.links(base_url))

    def callback_body(self, job: JobView) -> dict[str, Any]:
        return self.view(job)

    # --- submission --------------------------------------------------------------------------

    async def submit_stream(
        self, principal: Principal, surface: str, body: AsyncIterable[bytes], options: JobOptions
    ) -> Submitted:
        """A job from a streamed JSONL body; over the file limit, the job fails limit_exceeded."""
        job_id = new_job_id()
        limit = self.settings.job_max_file_bytes
        try:
            info = await self.blobs.put_async_stream(input_key(job_id), body, max_bytes=limit)
        except BlobTooLarge:
            return await self._create(principal, surface, options, job_id, size=limit, over=True)
        return await self._create(principal, surface, options, job_id, size=info.size)

    async def _create(
        self,
        principal: Principal,
        surface: str,
        options: JobOptions,
        job_id: str,
        *,
        size: int,
        over: bool = False,
    ) -> Submitted:
        secret = options.callback_secret
        chosen = None
        if options.callback_url and secret is None:
            secret = chosen = secrets.token_hex(32)
        job = await asyncio.to_thread(
            self.store.create,
            principal,
            surface=surface,
            chunk_lines=self.settings.job_chunk_lines,
            callback_url=options.callback_url,
            callback_secret=secret,
            retention_days=options.retention_days or self.settings.job_retention_days,
            job_id=job_id,
        )
        if over:
            limit = self.settings.job_max_file_bytes
            message = f"file exceeds the limit of {limit} bytes"
            await self.runner.end_now(job.id, ErrorCode.LIMIT_EXCEEDED, message)
        else:
            self.runner.enqueue(job.id)
        return Submitted(job, size, chosen)

    # --- multipart uploads -------------------------------------------------------------------

    async def create_upload(self, principal: Principal, surface: str) -> UploadView:
        ttl = dt.timedelta(hours=self.settings.upload_expiry_hours)
        return await asyncio.to_thread(self.uploads.create, principal, surface=surface, ttl=ttl)

    async def put_part(
        self,
        principal: Principal,
        file_id: str,
        upload_id: str | None,
        part_number: Any,
        body: AsyncIterable[bytes],
    ) -> PartView:
        number = check_part_number(part_number)
        upload = await asyncio.to_thread(self.uploads.get_open, principal, file_id, upload_id)
        key = upload.part_key(number)
        limit = self.settings.job_max_part_bytes
        try:
            info = await self.blobs.put_async_stream(key, body, max_bytes=limit)
        except BlobTooLarge:
            raise part_too_large(limit) from None
        part = PartView(number, quote_etag(info.etag), info.size, key)
        await asyncio.to_thread(self.uploads.put_part, file_id, part)
        return part

    async def complete_upload(
        self,
        principal: Principal,
        file_id: str,
        upload_id: str | None,
        parts: Any,
        options: JobOptions,
    ) -> Submitted:
        upload = await asyncio.to_thread(self.uploads.get_open, principal, file_id, upload_id)
        stored = await asyncio.to_thread(self.uploads.parts, file_id)
        chosen = _chosen_parts(parts, stored)
        size = sum(part.size for part in chosen)
        if not await asyncio.to_thread(
            self.uploads.close, file_id, UploadState.COMPLETED, size=size
        ):
            raise not_found("upload", file_id)
        job_id = new_job_id()
        over = size > self.settings.job_max_file_bytes
        if not over:
            keys = [part.blob_key for part in chosen]
            await asyncio.to_thread(self.blobs.concat, input_key(job_id), keys)
        await asyncio.to_thread(self.blobs.delete_prefix, f"uploads/{file_id}/")
        return await self._create(principal, upload.surface, options, job_id, size=size, over=over)

    async def abort_upload(self, principal: Principal, file_id: str, upload_id: str | None) -> None:
        await asyncio.to_thread(self.uploads.get_open, principal, file_id, upload_id)
        if await asyncio.to_thread(self.uploads.close, file_id, UploadState.ABORTED):
            await asyncio.to_thread(self.blobs.delete_prefix, f"uploads/{file_id}/")

    # --- reading jobs ------------------------------------------------------------------------

    async def get(
        self, principal: Principal, job_id: str, *, surface: str | None = None
    ) -> JobView:
        """The job as stored plus the lines its running chunks finished (per-line progress)."""
        progress = self.runner.work.progress
        job = await asyncio.to_thread(progress.read, lambda: self.store.get(principal, job_id))
        if surface is not None and job.surface != surface:
            raise not_found("job", job_id)
        return job

    async def page(
        self, principal: Principal, *, limit: int, cursor: str | None, surface: str | None = None
    ) -> tuple[list[JobView], str | None]:
        def load() -> tuple[list[JobView], str | None]:
            return self.store.page(principal, limit=limit, cursor=cursor, surface=surface)

        return await asyncio.to_thread(self.runner.work.progress.read_page, load)

    async def cancel(self, principal: Principal, job_id: str) -> JobView:
        job = await asyncio.to_thread(self.store.request_cancel, principal, job_id)
        await self.runner.cancel(job_id)
        return job

    def open_output(self, job_id: str, index: int) -> BinaryIO:
        try:
            return self.blobs.open(output_key(job_id, index))
        except (BlobNotFound, ValueError):
            raise BatchVisionError(ErrorCode.NOT_FOUND, "output not found") from None

    async def result_lines(self, job: JobView) -> AsyncIterator[bytes]:
        """Every result line so far, in line order: the output files of an ended job (or of
        one whose outputs are assembled while it ends), the recorded chunks of a running one."""
        if job.state in FINAL_STATES or job.output_files:
            keys = [output_key(job.id, i) for i in range(job.output_files)]
        else:
            chunks = await asyncio.to_thread(self.store.done_chunks, job.id)
            keys = [c.result_key for c in chunks]
        for key in keys:
            try:
                file = await asyncio.to_thread(self.blobs.open, key)
            except BlobNotFound:
                continue  # the job ended (or expired) meanwhile
            try:
                while block := await asyncio.to_thread(file.read, STREAM_BLOCK):
                    yield block
            finally:
                await asyncio.to_thread(file.close)


def _chosen_parts(parts: Any, stored: dict[int, PartView]) -> list[PartView]:
    """The parts named at completion: ascending part numbers, each uploaded, etags matching."""
    if not isinstance(parts, list) or not parts:
        raise BatchVisionError(ErrorCode.INVALID_REQUEST, "'parts' must be a non-empty list")
    chosen: list[PartView] = []
    for entry in parts:
        if not isinstance(entry, dict):
            raise BatchVisionError(ErrorCode.INVALID_REQUEST, "each part must be an object")
        number = check_part_number(entry.get("partNumber"))
        if chosen and number <= chosen[-1].part_number:
            raise _bad_parts("parts must be listed in ascending partNumber order, each once")
        part = stored.get(number)
        if part is None:
            raise _bad_parts(f"part {number} was not uploaded")
        if not same_etag(entry.get("etag"), part.etag):
            raise _bad_parts(f"the etag of part {number} does not match the uploaded part")
        chosen.append(part)
    return chosen
