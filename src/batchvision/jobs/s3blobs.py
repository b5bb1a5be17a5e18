"""`S3Blobs`: the `Blobs` interface over an S3-compatible bucket (AWS, MinIO, Ceph, R2, moto).

Install with ``pip install 'batchvision[s3]'``; :func:`batchvision.jobs.blobs.make_blobs` builds it
from ``blob_store=s3``. Every key lives under ``s3_prefix`` in ``s3_bucket``.

Writes are atomic by S3's semantics: a write either puts one object (up to :data:`PART_SIZE`
bytes, buffered) or runs one multipart upload, completed only when every byte arrived and aborted
on any failure, so readers see the old object or the new one. Writes of unknown length (HTTP
bodies, chunk sources) are buffered :data:`PART_SIZE` bytes at a time, never whole.

Multipart uploads of the job API (``PUT /parts``) keep each part as its own object (its etag is
S3's), so a client may re-send a part, list a subset of parts at completion, or send parts below
S3's 5 MiB minimum, exactly as with the local store. Completing the upload (:meth:`concat`) is one
S3 multipart upload: sources of at least 5 MiB become ``UploadPartCopy`` parts, copied inside S3
without passing through the server; runs of smaller sources are read and re-uploaded as parts of
:data:`PART_SIZE` (the last one may be smaller, as S3 allows).

ETags are S3's: the md5 hex of the content for an object put in one request, S3's
``<md5 of part md5s>-<parts>`` for a multipart one. Reads (:meth:`open`) are seekable streams of
ranged GETs pinned to the object's etag: an object replaced mid-read fails the read (412 from S3,
a :class:`BlobError`) rather than mixing two versions. A server killed mid-write leaves an
incomplete multipart upload, invisible to reads and listings; :meth:`sweep_temp` aborts those.

Output links stay the server's HMAC-signed links (``jobs/signing.py``), served by streaming the
object through the server, rather than S3 presigned GETs: the links and their expiry are the same
whatever the store; the bucket and its endpoint can stay private (a MinIO on an internal network
needs no address clients reach); a link is dead the moment retention purges its job; and a
presigned URL cannot outlive the credentials that signed it (at most 7 days, less with temporary
credentials) while ``output_url_ttl_s`` has no such bound. The cost: result bytes pass through an
API server.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from collections.abc import AsyncIterable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, BinaryIO, cast

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from batchvision.core.settings import Settings
from batchvision.jobs.blobs import (
    COPY_BLOCK,
    BlobError,
    BlobInfo,
    BlobNotFound,
    BlobTooLarge,
    validate_key,
    validate_prefix,
)

MIN_PART = 5 * 1024 * 1024  # S3's smallest part, except the last
PART_SIZE = 8 * 1024 * 1024  # what one buffered part holds (memory per write in flight)
MAX_COPY_PART = 5 * 1024**3  # S3's largest UploadPartCopy source
DELETE_BATCH = 1000  # DeleteObjects' limit per request

_MISSING = frozenset({"404", "NoSuchKey", "NotFound"})


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


@contextlib.contextmanager
def _storage_errors(key: str) -> Iterator[None]:
    """botocore's failures as `BlobError`s (a missing object as `BlobNotFound`)."""
    try:
        yield
    except ClientError as exc:
        if _code(exc) in _MISSING:
            raise BlobNotFound(key) from exc
        raise BlobError(f"S3 request for {key} failed: {_code(exc) or exc}") from exc
    except BotoCoreError as exc:
        raise BlobError(f"S3 request for {key} failed: {exc}") from exc


def _etag(raw: str) -> str:
    return raw.strip('"')


class _Upload:
    """One atomic write of `key`: buffered parts, one put_object or one multipart upload."""

    def __init__(self, client: Any, bucket: str, name: str, key: str, max_bytes: int | None):
        self._client, self._bucket, self._name, self.key = client, bucket, name, key
        self._max_bytes = max_bytes
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self.size = 0

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._max_bytes is not None and self.size + len(data) > self._max_bytes:
            raise BlobTooLarge(self.key, self._max_bytes)
        self._buffer += data
        self.size += len(data)
        while len(self._buffer) >= PART_SIZE:
            self._send(bytes(self._buffer[:PART_SIZE]))
            del self._buffer[:PART_SIZE]

    def copy(self, source: str, etag: str, size: int) -> None:
        """Append a whole object by UploadPartCopy; only at a part boundary (nothing buffered)."""
        assert not self._buffer, "a copied part must start at a part boundary"
        assert size >= MIN_PART
        if self._max_bytes is not None and self.size + size > self._max_bytes:
            raise BlobTooLarge(self.key, self._max_bytes)
        number = self._next_number()
        copied = self._client.upload_part_copy(
            Bucket=self._bucket,
            Key=self._name,
            UploadId=self._upload_id,
            PartNumber=number,
            CopySource={"Bucket": self._bucket, "Key": source},
            CopySourceIfMatch=f'"{etag}"',
        )
        self._parts.append({"PartNumber": number, "ETag": copied["CopyPartResult"]["ETag"]})
        self.size += size

    def commit(self) -> str:
        """Store the object; its etag."""
        if self._upload_id is None:
            put = self._client.put_object(
                Bucket=self._bucket, Key=self._name, Body=bytes(self._buffer)
            )
            return _etag(put["ETag"])
        if self._buffer:
            self._send(bytes(self._buffer))
            self._buffer.clear()
        done = self._client.complete_multipart_upload(
            Bucket=self._bucket,
            Key=self._name,
            UploadId=self._upload_id,
            MultipartUpload={"Parts": self._parts},
        )
        self._upload_id = None
        return _etag(done["ETag"])

    def abort(self) -> None:
        if self._upload_id is not None:
            with contextlib.suppress(ClientError, BotoCoreError):
                self._client.abort_multipart_upload(
                    Bucket=self._bucket, Key=self._name, UploadId=self._upload_id
                )
            self._upload_id = None
        self._buffer.clear()

    def _next_number(self) -> int:
        if self._upload_id is None:
            created = self._client.create_multipart_upload(Bucket=self._bucket, Key=self._name)
            self._upload_id = str(created["UploadId"])
        return len(self._parts) + 1

    def _send(self, data: bytes) -> None:
        number = self._next_number()
        sent = self._client.upload_part(
            Bucket=self._bucket, Key=self._name, UploadId=self._upload_id,
            PartNumber=number, Body=data,
        )  # fmt: skip
        self._parts.append({"PartNumber": number, "ETag": sent["ETag"]})


class _RangeReader(io.RawIOBase):
    """A seekable read of one object version: a streaming GET from the current position, opened
    again (ranged) after a seek. At most one HTTP body is open; nothing is read ahead."""

    def __init__(self, blobs: S3Blobs, key: str, info: BlobInfo) -> None:
        self._blobs, self._key, self._info = blobs, key, info
        self._position = 0
        self._body: Any = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._info.size}[whence]
        target = base + offset
        if target < 0:
            raise ValueError("negative seek position")
        if target != self._position:
            self._drop_body()
            self._position = target
        return target

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._position >= self._info.size or not len(view):
            return 0
        if self._body is None:
            self._body = self._blobs._get_range(self._key, self._info.etag, self._position)
        with _storage_errors(self._key):
            data = self._body.read(len(view))
        if not data:
            raise BlobError(f"S3 object {self._key} ended early at byte {self._position}")
        view[: len(data)] = data
        self._position += len(data)
        return len(data)

    def close(self) -> None:
        self._drop_body()
        super().close()

    def _drop_body(self) -> None:
        if self._body is not None:
            self._body.close()
            self._body = None


class S3Blobs:
    """Objects in ``bucket`` under ``prefix``; see the module docstring."""

    def __init__(self, client: Any, bucket: str, prefix: str = "") -> None:
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        validate_prefix(prefix)
        self.client, self.bucket, self.prefix = client, bucket, prefix

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Blobs:
        assert settings.s3_bucket is not None  # Settings requires it with blob_store=s3
        # Path-style addressing: what MinIO, Ceph and moto expect at a custom endpoint.
        style = "path" if settings.s3_endpoint_url else "auto"
        config = Config(
            retries={"max_attempts": 5, "mode": "standard"},
            s3={"addressing_style": style},
            max_pool_connections=32,  # blob calls run on many worker threads at once
        )
        client = boto3.session.Session().client(
            "s3",
            endpoint_url=settings.s3_endpoint_url,
            region_name=settings.s3_region,
            config=config,
        )
        return cls(client, settings.s3_bucket, settings.s3_prefix)

    def __repr__(self) -> str:
        return f"S3Blobs(bucket={self.bucket!r}, prefix={self.prefix!r})"

    # -- writing ---------------------------------------------------------------------------------

    def put_stream(
        self, key: str, chunks: Iterable[bytes], *, max_bytes: int | None = None
    ) -> BlobInfo:
        upload = self._begin(key, max_bytes)
        try:
            with _storage_errors(key):
                for chunk in chunks:
                    if chunk:
                        upload.write(chunk)
                return self._committed(upload)
        except BaseException:
            upload.abort()
            raise

    async def put_async_stream(
        self, key: str, chunks: AsyncIterable[bytes], *, max_bytes: int | None = None
    ) -> BlobInfo:
        # One worker thread per write runs the S3 calls in order, so the abort after a failure or
        # a cancellation runs after the call in flight, never beside it (as LocalBlobs does).
        upload = self._begin(key, max_bytes)
        loop = asyncio.get_running_loop()
        worker = ThreadPoolExecutor(1, thread_name_prefix="batchvision-s3")

        def write(data: bytes) -> None:
            with _storage_errors(key):
                upload.write(data)

        def commit() -> BlobInfo:
            with _storage_errors(key):
                return self._committed(upload)

        try:
            buffer = bytearray()
            async for chunk in chunks:
                buffer += chunk
                if len(buffer) >= COPY_BLOCK:
                    data, buffer = bytes(buffer), bytearray()
                    await loop.run_in_executor(worker, write, data)
            if buffer:
                await loop.run_in_executor(worker, write, bytes(buffer))
            return await loop.run_in_executor(worker, commit)
        except BaseException:
            await asyncio.shield(loop.run_in_executor(worker, upload.abort))
            raise
        finally:
            worker.shutdown(wait=False)  # never join a thread on the event loop

    def put_bytes(self, key: str, data: bytes) -> BlobInfo:
        return self.put_stream(key, (data,))

    def concat(
        self, dest: str, sources: Sequence[str], *, max_bytes: int | None = None
    ) -> BlobInfo:
        found = [self._require(source) for source in sources]
        total = sum(info.size for info in found)
        if max_bytes is not None and total > max_bytes:
            raise BlobTooLarge(dest, max_bytes)
        upload = self._begin(dest, max_bytes)
        try:
            for info in found:
                self._append(upload, info)
            with _storage_errors(dest):
                return self._committed(upload)
        except BaseException:
            upload.abort()
            raise

    # -- reading ---------------------------------------------------------------------------------

    def open(self, key: str) -> BinaryIO:
        info = self._require(key)
        reader = _RangeReader(self, key, info)
        return cast(BinaryIO, io.BufferedReader(reader, buffer_size=COPY_BLOCK))

    def info(self, key: str) -> BlobInfo | None:
        try:
            return self._require(key)
        except BlobNotFound:
            return None

    def list_prefix(self, prefix: str) -> list[BlobInfo]:
        found = [self._listed(entry) for entry in self._list(prefix)]
        found.sort(key=lambda info: info.key)
        return found

    # -- removing --------------------------------------------------------------------------------

    def delete(self, key: str) -> None:
        with _storage_errors(key):
            self.client.delete_object(Bucket=self.bucket, Key=self._name(key))

    def delete_prefix(self, prefix: str) -> int:
        names = [str(entry["Key"]) for entry in self._list(prefix)]
        removed = 0
        for start in range(0, len(names), DELETE_BATCH):
            batch = [{"Key": name} for name in names[start : start + DELETE_BATCH]]
            with _storage_errors(prefix):
                answer = self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
                )
            failed = answer.get("Errors", [])
            if failed:
                raise BlobError(f"S3 could not delete {len(failed)} objects under {prefix}")
            removed += len(batch)
        return removed

    def sweep_temp(self, older_than_s: float) -> int:
        """Abort the multipart uploads under our prefix started more than ``older_than_s``
        seconds ago: the leftovers of writes a killed server never finished or aborted."""
        cutoff = time.time() - older_than_s
        aborted = 0
        pages = self.client.get_paginator("list_multipart_uploads")
        with _storage_errors(self.prefix or "/"):
            for page in pages.paginate(Bucket=self.bucket, Prefix=self.prefix):
                for upload in page.get("Uploads", []):
                    if upload["Initiated"].timestamp() <= cutoff:
                        self.client.abort_multipart_upload(
                            Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                        )
                        aborted += 1
        return aborted

    # -- internals -------------------------------------------------------------------------------

    def _name(self, key: str) -> str:
        return self.prefix + validate_key(key)

    def _begin(self, key: str, max_bytes: int | None) -> _Upload:
        if max_bytes is not None and max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        return _Upload(self.client, self.bucket, self._name(key), key, max_bytes)

    def _committed(self, upload: _Upload) -> BlobInfo:
        upload.commit()
        # The stored object's own size, etag and time, as info() and listings will show them.
        return self._require(upload.key)

    def _require(self, key: str) -> BlobInfo:
        with _storage_errors(key):
            head = self.client.head_object(Bucket=self.bucket, Key=self._name(key))
        modified: datetime = head["LastModified"].astimezone(UTC)
        return BlobInfo(key, int(head["ContentLength"]), _etag(head["ETag"]), modified)

    def _append(self, upload: _Upload, info: BlobInfo) -> None:
        """One source of a concat: copied inside S3 when it can be a part of its own, else read
        through the part buffer."""
        if not upload.buffered and MIN_PART <= info.size <= MAX_COPY_PART:
            with _storage_errors(info.key):
                upload.copy(self._name(info.key), info.etag, info.size)
            return
        with self.open(info.key) as file:
            while block := file.read(COPY_BLOCK):
                with _storage_errors(upload.key):
                    upload.write(block)

    def _get_range(self, key: str, etag: str, start: int) -> Any:
        with _storage_errors(key):
            answer = self.client.get_object(
                Bucket=self.bucket,
                Key=self._name(key),
                Range=f"bytes={start}-",
                IfMatch=f'"{etag}"',
            )
        return answer["Body"]

    def _list(self, prefix: str) -> Iterator[dict[str, Any]]:
        validate_prefix(prefix)
        pages = self.client.get_paginator("list_objects_v2")
        with _storage_errors(prefix or "/"):
            for page in pages.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
                yield from page.get("Contents", [])

    def _listed(self, entry: dict[str, Any]) -> BlobInfo:
        key = str(entry["Key"])[len(self.prefix) :]
        modified: datetime = entry["LastModified"].astimezone(UTC)
        return BlobInfo(key, int(entry["Size"]), _etag(entry["ETag"]), modified)
