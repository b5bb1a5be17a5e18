"""The `Blobs` contract, run against both backends: LocalBlobs on disk and S3Blobs over a real
moto S3 server (HTTP on 127.0.0.1). Plus what only S3 has: multipart leftovers and the factory."""

from __future__ import annotations

import asyncio
import hashlib
import sys
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from batchvision.core.settings import Settings
from batchvision.jobs.blobs import (
    BlobError,
    BlobNotFound,
    Blobs,
    BlobTooLarge,
    LocalBlobs,
    make_blobs,
)
from batchvision.jobs.s3blobs import MIN_PART, PART_SIZE, S3Blobs
from s3_server import new_bucket, s3_client, s3_server

MB = 1024 * 1024


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with s3_server() as url:
        yield url


@pytest.fixture(params=["local", "s3"])
def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> Blobs:
    if request.param == "local":
        return LocalBlobs(tmp_path / "blobs")
    endpoint: str = request.getfixturevalue("endpoint")
    return S3Blobs(s3_client(endpoint), new_bucket(endpoint), "tenant-a/batchvision")


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def read(blobs: Blobs, key: str) -> bytes:
    with blobs.open(key) as file:
        return file.read()


def pattern(size: int, seed: int = 0) -> bytes:
    """Bytes whose every MiB differs, so a misplaced part shows."""
    block = hashlib.sha256(str(seed).encode()).digest() * 32768  # 1 MiB
    whole = b"".join(bytes([i % 251]) + block[1:] for i in range(size // MB + 1))
    return whole[:size]


def in_pieces(data: bytes, size: int = 256 * 1024) -> Iterator[bytes]:
    return (data[i : i + size] for i in range(0, len(data), size))


def open_multipart_uploads(blobs: Blobs) -> list[Any]:
    if not isinstance(blobs, S3Blobs):
        return []
    answer = blobs.client.list_multipart_uploads(Bucket=blobs.bucket)
    return list(answer.get("Uploads", []))


class Boom(Exception):
    pass


# -- round trips ----------------------------------------------------------------------------------


def test_put_open_info_round_trip_with_md5_etags(blobs: Blobs) -> None:
    stored = blobs.put_bytes("jobs/j1/input", b"line one\nline two\n")
    assert (stored.size, stored.etag) == (18, md5(b"line one\nline two\n"))
    assert read(blobs, "jobs/j1/input") == b"line one\nline two\n"
    assert blobs.info("jobs/j1/input") == stored
    again = blobs.put_stream("jobs/j1/input", iter([b"new", b"", b" content"]))
    assert again.etag == md5(b"new content")
    assert read(blobs, "jobs/j1/input") == b"new content"


def test_empty_object_and_missing_keys(blobs: Blobs) -> None:
    assert blobs.put_bytes("a/empty", b"").size == 0
    assert read(blobs, "a/empty") == b""
    with pytest.raises(BlobNotFound):
        blobs.open("a/missing")
    assert blobs.info("a/missing") is None
    blobs.delete("a/missing")  # not an error
    with pytest.raises(ValueError, match="invalid blob key"):
        blobs.put_bytes("../escape", b"x")


def test_a_large_stream_is_stored_whole_and_read_back_by_seeks(blobs: Blobs) -> None:
    data = pattern(PART_SIZE + 3 * MB + 17)  # more than one buffered part
    stored = blobs.put_stream("big/one", in_pieces(data))
    assert stored.size == len(data)
    assert blobs.info("big/one") == stored
    with blobs.open("big/one") as file:
        assert file.read(10) == data[:10]
        file.seek(PART_SIZE - 5)
        assert file.read(10) == data[PART_SIZE - 5 : PART_SIZE + 5]
        file.seek(len(data) - 7)
        assert file.read() == data[-7:]
        file.seek(0)
        assert file.read() == data


def test_readline_and_seek_serve_jsonl_chunks(blobs: Blobs) -> None:
    lines = [f'{{"id": {i}}}\n'.encode() for i in range(500)]
    blobs.put_bytes("jobs/j2/input", b"".join(lines))
    offset = sum(len(line) for line in lines[:250])
    with blobs.open("jobs/j2/input") as file:
        file.seek(offset)
        assert [file.readline() for _ in range(3)] == lines[250:253]


def test_a_failing_source_or_a_size_limit_stores_nothing(blobs: Blobs) -> None:
    blobs.put_bytes("keep/me", b"old")

    def failing() -> Iterator[bytes]:
        yield pattern(PART_SIZE + MB)  # far enough for S3 to have begun a multipart upload
        raise Boom

    with pytest.raises(Boom):
        blobs.put_stream("keep/me", failing())
    with pytest.raises(BlobTooLarge):
        blobs.put_stream("keep/me", in_pieces(pattern(PART_SIZE + MB)), max_bytes=PART_SIZE)
    with pytest.raises(BlobTooLarge):
        blobs.put_stream("keep/new", iter([b"12345"]), max_bytes=4)
    assert blobs.put_stream("keep/exact", iter([b"1234"]), max_bytes=4).size == 4
    assert read(blobs, "keep/me") == b"old"
    assert blobs.info("keep/new") is None
    assert open_multipart_uploads(blobs) == []


def test_an_object_replaced_mid_read_reads_old_or_fails_never_mixed(blobs: Blobs) -> None:
    old, new = pattern(3 * MB, seed=1), pattern(3 * MB, seed=2)
    blobs.put_bytes("swap/me", old)
    with blobs.open("swap/me") as file:
        head = file.read(MB)
        blobs.put_bytes("swap/me", new)
        file.seek(MB)  # a fresh read of the rest
        try:
            seen = head + file.read()
        except BlobError:
            seen = None
    assert seen in (old, None)
    assert read(blobs, "swap/me") == new


# -- prefixes -------------------------------------------------------------------------------------


def test_list_and_delete_by_string_prefix(blobs: Blobs) -> None:
    for key in ("jobs/abc/0", "jobs/abc/1", "jobs/abd/0", "jobs/b", "uploads/u1/parts/1"):
        blobs.put_bytes(key, key.encode())
    matched = [i.key for i in blobs.list_prefix("jobs/ab")]
    assert matched == ["jobs/abc/0", "jobs/abc/1", "jobs/abd/0"]
    listed = blobs.list_prefix("jobs/abc/")
    assert [(i.key, i.size, i.etag) for i in listed] == [
        ("jobs/abc/0", 10, md5(b"jobs/abc/0")),
        ("jobs/abc/1", 10, md5(b"jobs/abc/1")),
    ]
    assert listed == [blobs.info("jobs/abc/0"), blobs.info("jobs/abc/1")]
    assert blobs.delete_prefix("jobs/abc/") == 2
    assert blobs.delete_prefix("jobs/abc/") == 0
    assert [i.key for i in blobs.list_prefix("")] == ["jobs/abd/0", "jobs/b", "uploads/u1/parts/1"]


def test_listing_and_purging_page_past_a_thousand_objects(blobs: Blobs) -> None:
    keys = [f"jobs/many/chunks/{i:05d}" for i in range(1005)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda key: blobs.put_bytes(key, b"r"), keys))
    blobs.put_bytes("jobs/other", b"kept")
    assert [info.key for info in blobs.list_prefix("jobs/many/")] == keys
    assert blobs.delete_prefix("jobs/many/") == 1005
    assert [info.key for info in blobs.list_prefix("jobs/")] == ["jobs/other"]


# -- concat (completing multipart uploads, assembling outputs) ------------------------------------


def test_concat_small_parts_in_the_given_order(blobs: Blobs) -> None:
    for number, text in ((1, b"one\n"), (2, b"two\n"), (3, b"three\n")):
        blobs.put_bytes(f"uploads/u/parts/{number}", text)
    done = blobs.concat("jobs/j/input", ["uploads/u/parts/3", "uploads/u/parts/1"])
    assert read(blobs, "jobs/j/input") == b"three\none\n"
    assert done == blobs.info("jobs/j/input")
    assert read(blobs, "uploads/u/parts/2") == b"two\n"  # sources left alone


def test_concat_mixes_large_copied_and_small_buffered_sources(blobs: Blobs) -> None:
    sizes = [MIN_PART + 1, 1000, MIN_PART + 2, 3 * MB, MIN_PART, 10]
    pieces = [pattern(size, seed=i) for i, size in enumerate(sizes)]
    for number, piece in enumerate(pieces, start=1):
        blobs.put_bytes(f"uploads/v/parts/{number}", piece)
    sources = [f"uploads/v/parts/{n}" for n in range(1, len(pieces) + 1)]
    done = blobs.concat("jobs/k/input", sources)
    assert done.size == sum(sizes)
    assert read(blobs, "jobs/k/input") == b"".join(pieces)
    assert open_multipart_uploads(blobs) == []
    if isinstance(blobs, S3Blobs):
        # S3's multipart etag shows the layout: the first source copied as a part of its own,
        # the rest through 8 MiB buffered parts.
        rest = b"".join(pieces[1:])
        parts = [pieces[0], rest[:PART_SIZE], rest[PART_SIZE:]]
        digests = b"".join(hashlib.md5(part).digest() for part in parts)
        assert done.etag == f"{hashlib.md5(digests).hexdigest()}-3"


def test_concat_into_a_source_and_its_failures(blobs: Blobs) -> None:
    blobs.put_bytes("c/a", b"aaa")
    blobs.put_bytes("c/b", b"bb")
    blobs.concat("c/a", ["c/a", "c/b"])
    assert read(blobs, "c/a") == b"aaabb"
    with pytest.raises(BlobNotFound):
        blobs.concat("c/out", ["c/a", "c/nope"])
    with pytest.raises(BlobTooLarge):
        blobs.concat("c/out", ["c/a", "c/b"], max_bytes=6)
    assert blobs.info("c/out") is None
    assert blobs.concat("c/none", []).size == 0


# -- async writes ---------------------------------------------------------------------------------


async def _body(data: bytes, fail: bool = False) -> AsyncIterator[bytes]:
    for piece in in_pieces(data, 64 * 1024):
        yield piece
        await asyncio.sleep(0)
    if fail:
        raise Boom


def test_async_puts_store_whole_bodies_and_failures_leave_nothing(blobs: Blobs) -> None:
    data = pattern(PART_SIZE + 2 * MB)
    stored = asyncio.run(blobs.put_async_stream("parts/1", _body(data)))
    assert (stored.size, read(blobs, "parts/1")) == (len(data), data)
    with pytest.raises(Boom):
        asyncio.run(blobs.put_async_stream("parts/2", _body(data, fail=True)))
    with pytest.raises(BlobTooLarge):
        asyncio.run(blobs.put_async_stream("parts/3", _body(data), max_bytes=MB))
    assert [info.key for info in blobs.list_prefix("parts/")] == ["parts/1"]
    assert open_multipart_uploads(blobs) == []


def test_an_async_put_cancelled_midway_leaves_nothing(blobs: Blobs) -> None:
    async def slow() -> AsyncIterator[bytes]:
        yield pattern(PART_SIZE + MB)
        await asyncio.sleep(60)
        yield b"never"

    async def cancel_it() -> None:
        task = asyncio.ensure_future(blobs.put_async_stream("slow/1", slow()))
        await asyncio.sleep(1.0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_it())
    assert blobs.list_prefix("slow/") == []
    assert open_multipart_uploads(blobs) == []


# -- S3 only: crash leftovers, settings and the factory --------------------------------------------


def test_sweep_aborts_multipart_leftovers_under_its_prefix_only(endpoint: str) -> None:
    client, bucket = s3_client(endpoint), new_bucket(endpoint)
    blobs = S3Blobs(client, bucket, "mine")
    client.create_multipart_upload(Bucket=bucket, Key="mine/jobs/x/input")  # a killed write
    client.create_multipart_upload(Bucket=bucket, Key="theirs/jobs/y/input")
    # (moto reports a fixed 2010 start time for every upload, so the age rule cannot be shown.)
    assert blobs.sweep_temp(0) == 1
    left = client.list_multipart_uploads(Bucket=bucket)["Uploads"]
    assert [upload["Key"] for upload in left] == ["theirs/jobs/y/input"]


def test_the_prefix_keeps_servers_sharing_a_bucket_apart(endpoint: str) -> None:
    client, bucket = s3_client(endpoint), new_bucket(endpoint)
    first, second = S3Blobs(client, bucket, "one"), S3Blobs(client, bucket, "one-more/")
    first.put_bytes("jobs/a", b"1")
    second.put_bytes("jobs/a", b"2")
    assert first.delete_prefix("") == 1
    assert read(second, "jobs/a") == b"2"
    names = [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]]
    assert names == ["one-more/jobs/a"]


def test_settings_need_a_bucket_for_the_s3_store(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="blob_store=s3 needs s3_bucket"):
        Settings(data_dir=tmp_path, blob_store="s3")
    assert Settings(data_dir=tmp_path).blob_store == "local"


def test_make_blobs_builds_the_named_store(tmp_path: Path, endpoint: str) -> None:
    assert isinstance(make_blobs(Settings(data_dir=tmp_path)), LocalBlobs)
    bucket = new_bucket(endpoint)
    settings = Settings(
        data_dir=tmp_path, blob_store="s3", s3_bucket=bucket, s3_endpoint_url=endpoint
    )
    blobs = make_blobs(settings)
    assert isinstance(blobs, S3Blobs)
    blobs.put_bytes("hello", b"world")
    assert s3_client(endpoint).get_object(Bucket=bucket, Key="hello")["Body"].read() == b"world"


def test_make_blobs_without_boto3_fails_at_start_up_naming_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)  # import boto3 -> ImportError
    settings = Settings(data_dir=tmp_path, blob_store="s3", s3_bucket="b")
    with pytest.raises(RuntimeError, match=r"install 'batchvision\[s3\]'"):
        make_blobs(settings)
