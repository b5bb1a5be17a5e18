"""LocalBlobs: atomic writes, etags, limits, prefixes, key safety and crash leftovers."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from batchvision.jobs.blobs import (
    BlobError,
    BlobNotFound,
    Blobs,
    BlobTooLarge,
    LocalBlobs,
    validate_key,
)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "blobs"


@pytest.fixture
def blobs(root: Path) -> LocalBlobs:
    return LocalBlobs(root)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def read(blobs: Blobs, key: str) -> bytes:
    with blobs.open(key) as file:
        return file.read()


def all_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def temp_files(root: Path) -> list[str]:
    return [f for f in all_files(root) if f.rsplit("/", 1)[-1].startswith(".tmp-")]


class Boom(Exception):
    pass


# -- round trips and etags -------------------------------------------------------------------------


def test_put_bytes_open_round_trip(blobs: LocalBlobs) -> None:
    info = blobs.put_bytes("uploads/u1/input.jsonl", b'{"a": 1}\n')
    assert read(blobs, "uploads/u1/input.jsonl") == b'{"a": 1}\n'
    assert info.key == "uploads/u1/input.jsonl"
    assert info.size == 9
    assert info.etag == md5(b'{"a": 1}\n')
    assert info.modified.tzinfo is not None
    assert abs((datetime.now(UTC) - info.modified).total_seconds()) < 60
    assert blobs.info("uploads/u1/input.jsonl") == info


def test_put_stream_hashes_while_writing(blobs: LocalBlobs) -> None:
    chunks = [os.urandom(1000), b"", os.urandom(3 * 1024 * 1024 + 7), b"tail"]
    whole = b"".join(chunks)
    info = blobs.put_stream("parts/p/00001", iter(chunks))
    assert info.size == len(whole)
    assert info.etag == md5(whole)
    assert read(blobs, "parts/p/00001") == whole
    assert blobs.info("parts/p/00001") == info


def test_empty_object(blobs: LocalBlobs) -> None:
    info = blobs.put_stream("empty", [])
    assert (info.size, info.etag) == (0, md5(b""))
    assert read(blobs, "empty") == b""


def test_open_and_info_of_missing_key(blobs: LocalBlobs) -> None:
    with pytest.raises(BlobNotFound) as caught:
        blobs.open("nope/x")
    assert isinstance(caught.value, LookupError)
    assert blobs.info("nope/x") is None
    blobs.put_bytes("dir/file", b"x")
    assert blobs.info("dir") is None  # a "folder" is not an object
    with pytest.raises(BlobNotFound):
        blobs.open("dir")
    with pytest.raises(BlobNotFound):
        blobs.open("dir/file/deeper")


def test_local_blobs_satisfies_the_interface(root: Path) -> None:
    store: Blobs = LocalBlobs(root)
    assert store.put_bytes("k", b"v").etag == md5(b"v")


# -- atomicity and crash leftovers -----------------------------------------------------------------


def test_failing_chunk_source_leaves_nothing(blobs: LocalBlobs, root: Path) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"first part"
        yield b"second part"
        raise Boom

    with pytest.raises(Boom):
        blobs.put_stream("results/j/chunk-0", chunks())
    assert blobs.info("results/j/chunk-0") is None
    assert temp_files(root) == []
    assert all_files(root) == []


def test_failing_overwrite_keeps_old_object(blobs: LocalBlobs, root: Path) -> None:
    blobs.put_bytes("k", b"old")

    def chunks() -> Iterator[bytes]:
        yield b"new"
        raise Boom

    with pytest.raises(Boom):
        blobs.put_stream("k", chunks())
    assert read(blobs, "k") == b"old"
    info = blobs.info("k")
    assert info is not None and info.etag == md5(b"old")
    assert temp_files(root) == []


def test_crash_leftover_is_invisible_and_swept(blobs: LocalBlobs, root: Path) -> None:
    blobs.put_bytes("jobs/j1/results/0", b"done")
    # What a crash mid-write leaves behind: a temp file next to where the object would go, which
    # no live process holds. Seconds old, as right after a kill -9 and a restart.
    leftover = root / "jobs" / "j1" / "results" / ".tmp-deadbeefdeadbeef"
    leftover.write_bytes(b"half a chu")

    assert [i.key for i in blobs.list_prefix("")] == ["jobs/j1/results/0"]
    assert [i.key for i in blobs.list_prefix("jobs/j1/results/")] == ["jobs/j1/results/0"]
    with pytest.raises(ValueError):
        blobs.info("jobs/j1/results/.tmp-deadbeefdeadbeef")

    assert blobs.sweep_temp(3600) == 1  # unowned: its age does not matter
    assert not leftover.exists()
    assert read(blobs, "jobs/j1/results/0") == b"done"


def test_a_write_in_progress_survives_any_sweep(blobs: LocalBlobs, root: Path) -> None:
    started, finish = threading.Event(), threading.Event()

    def slow_source() -> Iterator[bytes]:
        yield b"first half, "
        started.set()
        finish.wait(10)
        yield b"second half"

    writer = threading.Thread(target=blobs.put_stream, args=("uploads/u1/part-1", slow_source()))
    writer.start()
    assert started.wait(10)
    [temp] = temp_files(root)
    old = time.time() - 7200  # older than any age limit: only its lock keeps it
    os.utime(root / temp, (old, old))
    assert blobs.sweep_temp(0) == 0
    finish.set()
    writer.join(10)
    assert read(blobs, "uploads/u1/part-1") == b"first half, second half"
    assert temp_files(root) == []


def test_sweep_removes_orphaned_sidecars(blobs: LocalBlobs, root: Path) -> None:
    blobs.put_bytes("a/b", b"x")
    (root / "a" / "b").unlink()  # as if a crash struck between the two unlinks of a delete
    assert blobs.sweep_temp(0) == 1
    assert all_files(root) == []


def test_overwrite_is_atomic_for_open_readers(blobs: LocalBlobs) -> None:
    blobs.put_bytes("results/r", b"old content")
    with blobs.open("results/r") as held:
        new = blobs.put_bytes("results/r", b"brand new content")
        assert held.read() == b"old content"
    assert read(blobs, "results/r") == b"brand new content"
    assert new.etag == md5(b"brand new content")
    assert blobs.info("results/r") == new


def test_concurrent_writers_to_one_key(blobs: LocalBlobs, root: Path) -> None:
    payloads = [bytes([i]) * (200_000 + i) for i in range(8)]
    start = threading.Barrier(len(payloads))

    def put(data: bytes) -> None:
        start.wait()
        blobs.put_bytes("same/key", data)

    threads = [threading.Thread(target=put, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    content = read(blobs, "same/key")
    assert content in payloads
    info = blobs.info("same/key")
    assert info is not None and (info.size, info.etag) == (len(content), md5(content))
    assert temp_files(root) == []


# -- etag sidecar is only a cache ------------------------------------------------------------------


def test_etag_recomputed_when_sidecar_missing_or_stale(blobs: LocalBlobs, root: Path) -> None:
    blobs.put_bytes("x/y", b"hello")
    sidecar = root / "x" / ".meta-y"
    assert sidecar.exists()

    sidecar.unlink()
    info = blobs.info("x/y")
    assert info is not None and info.etag == md5(b"hello")
    assert sidecar.exists()  # healed

    sidecar.write_text("{not json")
    info = blobs.info("x/y")
    assert info is not None and info.etag == md5(b"hello")

    # A crash between writing the new sidecar and renaming the data: the sidecar describes a
    # file that never arrived, and must not be trusted for the object that is there.
    stale = blobs.put_bytes("x/other", b"something else")
    sidecar.write_text((root / "x" / ".meta-other").read_text())
    info = blobs.info("x/y")
    assert info is not None and info.etag == md5(b"hello") != stale.etag
    assert [i.etag for i in blobs.list_prefix("x/")] == [stale.etag, md5(b"hello")]


# -- limits ----------------------------------------------------------------------------------------


def test_max_bytes_exceeded_stores_nothing(blobs: LocalBlobs, root: Path) -> None:
    consumed: list[int] = []

    def chunks() -> Iterator[bytes]:
        for i in range(100):
            consumed.append(i)
            yield b"x" * 1000

    with pytest.raises(BlobTooLarge) as caught:
        blobs.put_stream("uploads/big", chunks(), max_bytes=2500)
    assert caught.value.max_bytes == 2500
    assert consumed == [0, 1, 2]  # stopped reading as soon as the limit was passed
    assert blobs.info("uploads/big") is None
    assert all_files(root) == []


def test_max_bytes_is_inclusive(blobs: LocalBlobs) -> None:
    assert blobs.put_stream("k", [b"ab", b"cd"], max_bytes=4).size == 4
    assert blobs.put_stream("z", [], max_bytes=0).size == 0
    with pytest.raises(BlobTooLarge):
        blobs.put_stream("k", [b"ab", b"cde"], max_bytes=4)
    assert read(blobs, "k") == b"abcd"
    with pytest.raises(ValueError):
        blobs.put_stream("k", [b"a"], max_bytes=-1)


# -- concat ----------------------------------------------------------------------------------------


def test_concat_in_given_order(blobs: LocalBlobs, root: Path) -> None:
    parts = {n: os.urandom(700_000 + n) for n in (1, 2, 3)}
    # Parts arrive out of order and one is re-sent; the last copy counts.
    blobs.put_bytes("mp/u/00003", parts[3])
    blobs.put_bytes("mp/u/00001", b"first try")
    blobs.put_bytes("mp/u/00002", parts[2])
    blobs.put_bytes("mp/u/00001", parts[1])

    sources = ["mp/u/00001", "mp/u/00002", "mp/u/00003"]
    whole = parts[1] + parts[2] + parts[3]
    info = blobs.concat("inputs/u.jsonl", sources, max_bytes=len(whole))
    assert read(blobs, "inputs/u.jsonl") == whole
    assert (info.size, info.etag) == (len(whole), md5(whole))
    assert blobs.delete_prefix("mp/u/") == 3
    assert [i.key for i in blobs.list_prefix("")] == ["inputs/u.jsonl"]
    assert temp_files(root) == []


def test_concat_limits_and_missing_sources(blobs: LocalBlobs, root: Path) -> None:
    blobs.put_bytes("p/1", b"a" * 10)
    blobs.put_bytes("p/2", b"b" * 10)
    with pytest.raises(BlobTooLarge):
        blobs.concat("out", ["p/1", "p/2"], max_bytes=15)
    with pytest.raises(BlobNotFound):
        blobs.concat("out", ["p/1", "p/missing"])
    assert blobs.info("out") is None
    assert temp_files(root) == []
    assert [i.key for i in blobs.list_prefix("p/")] == ["p/1", "p/2"]
    with pytest.raises(ValueError):
        blobs.concat("out", ["p/1", "../etc/passwd"])


def test_concat_into_one_of_its_sources(blobs: LocalBlobs) -> None:
    blobs.put_bytes("log", b"head-")
    blobs.put_bytes("more", b"tail")
    blobs.concat("log", ["log", "more"])
    assert read(blobs, "log") == b"head-tail"


# -- delete and prefixes ---------------------------------------------------------------------------


def test_delete_is_idempotent_and_prunes_folders(blobs: LocalBlobs, root: Path) -> None:
    blobs.put_bytes("a/b/c", b"1")
    blobs.delete("a/b/c")
    blobs.delete("a/b/c")
    blobs.delete("never/existed")
    assert blobs.info("a/b/c") is None
    assert list(root.iterdir()) == []  # no empty folders or sidecars left behind
    blobs.put_bytes("a/b/c", b"2")  # and the key can be written again
    assert read(blobs, "a/b/c") == b"2"


def test_list_and_delete_prefix(blobs: LocalBlobs) -> None:
    keys = [
        "jobs/abc/results/00002",
        "jobs/abc/results/00000",
        "jobs/abc/input.jsonl",
        "jobs/abd/input.jsonl",
        "jobs/ab",
        "jobs2/x",
        "other",
    ]
    for key in keys:
        blobs.put_bytes(key, key.encode())

    listed = blobs.list_prefix("jobs/abc/")
    assert [i.key for i in listed] == [
        "jobs/abc/input.jsonl",
        "jobs/abc/results/00000",
        "jobs/abc/results/00002",
    ]
    assert all(i.etag == md5(i.key.encode()) and i.size == len(i.key) for i in listed)
    # Plain string prefixes, as in S3.
    assert [i.key for i in blobs.list_prefix("jobs/ab")] == [
        "jobs/ab",
        "jobs/abc/input.jsonl",
        "jobs/abc/results/00000",
        "jobs/abc/results/00002",
        "jobs/abd/input.jsonl",
    ]
    assert [i.key for i in blobs.list_prefix("jobs")][-1] == "jobs2/x"
    assert blobs.list_prefix("missing/") == []
    assert blobs.list_prefix("other/") == []
    assert len(blobs.list_prefix("")) == len(keys)

    assert blobs.delete_prefix("jobs/abc/") == 3
    assert blobs.delete_prefix("jobs/abc/") == 0
    assert [i.key for i in blobs.list_prefix("jobs/")] == ["jobs/ab", "jobs/abd/input.jsonl"]
    assert blobs.delete_prefix("") == 4
    assert blobs.list_prefix("") == []


def test_key_cannot_be_object_and_folder(blobs: LocalBlobs) -> None:
    blobs.put_bytes("a/b", b"x")
    with pytest.raises(BlobError):
        blobs.put_bytes("a/b/c", b"y")
    with pytest.raises(BlobError):
        blobs.put_bytes("a", b"y")
    assert read(blobs, "a/b") == b"x"


# -- key safety ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "../x",
        "a/../b",
        "a/..",
        "./a",
        "/abs",
        "a/",
        "a//b",
        "a\\b",
        "a\x00b",
        "",
        "x" * 600,
        "a/" + "b" * 201,
        "a b",
        "a:b",
        "ä",
        ".hidden",
        "a/.tmp-1234",
        "a/.meta-b",
    ],
)
def test_bad_keys_are_rejected(blobs: LocalBlobs, key: str) -> None:
    with pytest.raises(ValueError):
        validate_key(key)
    with pytest.raises(ValueError):
        blobs.put_bytes(key, b"x")
    with pytest.raises(ValueError):
        blobs.info(key)
    with pytest.raises(ValueError):
        blobs.open(key)
    with pytest.raises(ValueError):
        blobs.delete(key)


@pytest.mark.parametrize(
    "key", ["a", "jobs/j_1/results/chunk-000001.jsonl", "A.B-c_d/0", "x" * 200, "a/" * 255 + "b"]
)
def test_good_keys_are_accepted(blobs: LocalBlobs, key: str) -> None:
    assert validate_key(key) == key
    assert blobs.put_bytes(key, b"ok").key == key
    assert read(blobs, key) == b"ok"


@pytest.mark.parametrize("prefix", ["../", "/abs/", "a//", "a\\", "a\x00"])
def test_bad_prefixes_are_rejected(blobs: LocalBlobs, prefix: str) -> None:
    with pytest.raises(ValueError):
        blobs.list_prefix(prefix)
    with pytest.raises(ValueError):
        blobs.delete_prefix(prefix)


def test_symlinked_folder_cannot_lead_outside_root(
    blobs: LocalBlobs, root: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"do not read")
    (root / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ValueError):
        blobs.open("link/secret")
    with pytest.raises(ValueError):
        blobs.put_bytes("link/new", b"x")
    assert blobs.list_prefix("link/") == []
    assert not (outside / "new").exists()


# -- async writes ----------------------------------------------------------------------------------


async def body(chunks: list[bytes], fail_after: int | None = None) -> AsyncIterator[bytes]:
    for i, chunk in enumerate(chunks):
        if fail_after is not None and i == fail_after:
            raise Boom
        await asyncio.sleep(0)
        yield chunk


def test_async_put_from_asyncio_run(blobs: LocalBlobs, root: Path) -> None:
    chunks = [os.urandom(64 * 1024) for _ in range(40)] + [b"end"]
    whole = b"".join(chunks)
    info = asyncio.run(blobs.put_async_stream("uploads/a/part-1", body(chunks)))
    assert (info.size, info.etag) == (len(whole), md5(whole))
    assert read(blobs, "uploads/a/part-1") == whole
    assert blobs.info("uploads/a/part-1") == info
    assert temp_files(root) == []


def test_async_put_failures_leave_nothing(blobs: LocalBlobs, root: Path) -> None:
    chunks = [b"x" * 600_000] * 5
    with pytest.raises(Boom):
        asyncio.run(blobs.put_async_stream("u/1", body(chunks, fail_after=3)))
    with pytest.raises(BlobTooLarge):
        asyncio.run(blobs.put_async_stream("u/1", body(chunks), max_bytes=2_000_000))
    with pytest.raises(ValueError):
        asyncio.run(blobs.put_async_stream("../u", body(chunks)))
    assert all_files(root) == []


def test_async_put_cancelled_midway_leaves_nothing(blobs: LocalBlobs, root: Path) -> None:
    async def endless() -> AsyncIterator[bytes]:
        while True:
            await asyncio.sleep(0)
            yield b"y" * 300_000

    async def main() -> None:
        task = asyncio.create_task(blobs.put_async_stream("u/cancelled", endless()))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert all_files(root) == []
