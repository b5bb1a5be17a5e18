"""Blob storage for jobs: uploads, multipart parts, job inputs and result files.

`Blobs` is the small, S3-shaped interface the rest of `jobs/` talks to; `LocalBlobs` stores
objects as files under one root directory (by default ``data_dir / "blobs"``); ``S3Blobs``
(``jobs/s3blobs.py``) keeps them in an S3-compatible bucket. :func:`make_blobs` builds the one
``blob_store`` names.

Keys are "/"-separated strings from a modest alphabet (see :func:`validate_key`); prefixes are
plain string prefixes, as in S3 (``"jobs/ab"`` matches ``"jobs/abc/0"``), and listings are sorted
by key.

Crash safety of the local backend: every write is an ``AtomicFile`` (``core/fsutil.py``): a
temporary file named ``.tmp-…`` in the target's directory, fsynced, then renamed over the key with
``os.replace`` (and the directory fsynced, best effort). A reader therefore sees the old object
or the new one, never a mix, and a crash mid-write leaves only a ``.tmp-…`` file that listings
ignore and :meth:`LocalBlobs.sweep_temp` removes. A failed write (an exception from the chunk
source, a size limit, a cancellation, a full disk) removes its temporary file at once.

Each write holds an exclusive ``flock`` on its temporary file until the file is renamed or
removed; the kernel drops it when the process dies, even by kill -9. A temp file nobody holds is
therefore a crashed write's leftover, and the sweep removes it whatever its age: the sweep the job
runner runs at start-up reclaims what a killed server left (a 587 MB direct job body before this,
kept for an hour), while a slow upload that is still arriving is never touched. A file system
without ``flock`` falls back to the age rule.

A full disk (``ENOSPC``, ``EDQUOT``) is :func:`out_of_storage`: 507 ``insufficient_storage`` with a
generic message, after the partial file is removed.

ETags are the md5 hex digest of the content, computed while writing. The local backend keeps each
object's etag in a small sidecar file (``.meta-<name>``) that is only a cache: it records the
inode, size and mtime it describes, and when it does not match the object (a crash between the two
renames, a concurrent overwrite, a lost sidecar) the etag is recomputed from the content and the
sidecar healed.

Local limitation: a key cannot be both an object and a "folder" of other objects (``a`` and
``a/b``); writing the second raises :class:`BlobError`. Keys outside the alphabet are rejected with
``ValueError`` whatever the backend, so all backends accept the same keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import stat
import time
from collections.abc import AsyncIterable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, Protocol

from batchvision.core.errors import out_of_storage
from batchvision.core.fsutil import AtomicFile, fsync_dir, write_atomic
from batchvision.core.settings import Settings

log = logging.getLogger(__name__)

MAX_KEY_LENGTH = 512
# Leaves room for the ".tmp-"/".meta-" names under the usual 255-byte file name limit.
MAX_SEGMENT_LENGTH = 200
TEMP_PREFIX = ".tmp-"
META_PREFIX = ".meta-"
COPY_BLOCK = 1024 * 1024  # read size for concat and etag recomputation; batch size for async writes

_FULL_DISK = frozenset({errno.ENOSPC, errno.EDQUOT})

_SEGMENT = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9._\-]*", re.ASCII)


class BlobError(Exception):
    """A storage-level failure with a message meant for logs, not for clients."""


class BlobNotFound(BlobError, LookupError):
    def __init__(self, key: str) -> None:
        super().__init__(f"blob not found: {key}")
        self.key = key


class BlobTooLarge(BlobError):
    def __init__(self, key: str, max_bytes: int) -> None:
        super().__init__(f"blob {key} exceeds {max_bytes} bytes")
        self.key = key
        self.max_bytes = max_bytes


@dataclass(frozen=True)
class BlobInfo:
    key: str
    size: int
    etag: str  # without quotes; md5 hex of the content (S3: S3's etag, see s3blobs.py)
    modified: datetime  # timezone-aware, UTC


def validate_key(key: str) -> str:
    """Return ``key`` if it is a valid object key, else raise ``ValueError``.

    A key is 1 to 512 characters of ``[A-Za-z0-9._-]`` in "/"-separated segments; no segment is
    empty or longer than 200 characters, and none starts with "." (which rules out ``.`` and ``..``
    and keeps the local backend's ``.tmp-``/``.meta-`` names out of the key space). So: no leading
    "/", no backslash, no NUL.
    """
    if not isinstance(key, str):
        raise ValueError(f"blob key must be a string, not {type(key).__name__}")
    if not key or len(key) > MAX_KEY_LENGTH:
        raise ValueError(f"blob key must be 1 to {MAX_KEY_LENGTH} characters long")
    for segment in key.split("/"):
        if len(segment) > MAX_SEGMENT_LENGTH or not _SEGMENT.fullmatch(segment):
            raise ValueError(
                f"invalid blob key {key!r}: segments must be non-empty, at most "
                f"{MAX_SEGMENT_LENGTH} characters of [A-Za-z0-9._-], and not start with '.'"
            )
    return key


def validate_prefix(prefix: str) -> str:
    """Return ``prefix`` if it can begin a valid key (the empty prefix matches everything)."""
    if not isinstance(prefix, str):
        raise ValueError(f"blob prefix must be a string, not {type(prefix).__name__}")
    if prefix:
        validate_key(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix


class Blobs(Protocol):
    """Object storage for jobs. Every key argument is checked with :func:`validate_key`."""

    def put_stream(
        self, key: str, chunks: Iterable[bytes], *, max_bytes: int | None = None
    ) -> BlobInfo:
        """Store the concatenated chunks as ``key`` in one atomic step, replacing any old object.

        Raises :class:`BlobTooLarge` (storing nothing) as soon as more than ``max_bytes`` arrive.
        An exception from ``chunks`` propagates and stores nothing.
        """
        ...

    async def put_async_stream(
        self, key: str, chunks: AsyncIterable[bytes], *, max_bytes: int | None = None
    ) -> BlobInfo:
        """:meth:`put_stream` for an async source (an HTTP body); file work runs off the loop."""
        ...

    def put_bytes(self, key: str, data: bytes) -> BlobInfo: ...

    def open(self, key: str) -> BinaryIO:
        """Open the object for reading (the caller closes it); raises :class:`BlobNotFound`."""
        ...

    def info(self, key: str) -> BlobInfo | None: ...

    def delete(self, key: str) -> None:
        """Remove the object; removing a missing object is not an error."""
        ...

    def delete_prefix(self, prefix: str) -> int:
        """Remove every object whose key starts with ``prefix``; return how many were removed."""
        ...

    def list_prefix(self, prefix: str) -> list[BlobInfo]:
        """Every object whose key starts with ``prefix``, sorted by key."""
        ...

    def concat(
        self, dest: str, sources: Sequence[str], *, max_bytes: int | None = None
    ) -> BlobInfo:
        """Store the sources' contents, in order, as ``dest`` in one atomic step.

        For completing a multipart upload. ``dest`` may be one of the sources. Raises
        :class:`BlobNotFound` for a missing source and :class:`BlobTooLarge` past ``max_bytes``;
        either way nothing is stored and the sources are left alone.
        """
        ...

    def sweep_temp(self, older_than_s: float) -> int:
        """Remove leftovers of interrupted writes older than ``older_than_s``; return the count.

        Backends without such leftovers return 0.
        """
        ...


@contextlib.contextmanager
def _full_disk_is_507(key: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        if exc.errno not in _FULL_DISK:
            raise
        log.error("blob storage full while writing %s: %s", key, exc)
        raise out_of_storage() from exc


def _hold(temp: Path) -> int | None:
    """A descriptor holding `temp`'s write lock (released when closed, or when the process dies);
    None where the file system has no flock. Raises FileNotFoundError when a sweep removed the
    file between its creation and the lock."""
    fd = os.open(temp, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError:
        os.close(fd)
        return None
    if os.fstat(fd).st_nlink == 0:
        os.close(fd)
        raise FileNotFoundError(errno.ENOENT, "temp file swept before it was locked", str(temp))
    return fd


def _owned(path: Path) -> bool | None:
    """Whether a live write holds `path`'s lock; None where that cannot be told."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return None
    finally:
        os.close(fd)  # also drops the lock just taken
    return False


def _check_limit(key: str, size: int, max_bytes: int | None) -> None:
    if max_bytes is not None and size > max_bytes:
        raise BlobTooLarge(key, max_bytes)


def _modified(st: os.stat_result) -> datetime:
    return datetime.fromtimestamp(st.st_mtime_ns / 1e9, tz=UTC)


def _md5_of(file: BinaryIO) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    while block := file.read(COPY_BLOCK):
        digest.update(block)
    return digest.hexdigest()


class _PendingObject:
    """One write in progress: an atomic ``.tmp-`` file next to the target, hashed as it is
    written."""

    def __init__(self, blobs: LocalBlobs, key: str, max_bytes: int | None) -> None:
        self.key = key
        self.max_bytes = max_bytes
        self.path = blobs._path(key)
        self.size = 0
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._blobs = blobs
        if self.path.is_dir():
            raise BlobError(f"blob key {key} collides with a prefix of other keys")
        with _full_disk_is_507(key):
            self._file, self._lock = blobs._create_temp(self.path)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        _check_limit(self.key, self.size + len(data), self.max_bytes)
        with _full_disk_is_507(self.key):
            self._file.write(data)
        self._md5.update(data)
        self.size += len(data)

    def commit(self) -> BlobInfo:
        try:
            with _full_disk_is_507(self.key):
                st = self._file.stat()  # the rename keeps inode, size and mtime: the sidecar's
                etag = self._md5.hexdigest()
                self._blobs._write_meta(self.path, etag, st)
                self._file.commit()
        except BaseException as exc:
            self.abort()
            if isinstance(exc, IsADirectoryError | NotADirectoryError):
                raise BlobError(f"blob key {self.key} collides with other keys' prefix") from exc
            raise
        self._release()
        return BlobInfo(self.key, st.st_size, etag, _modified(st))

    def abort(self) -> None:
        self._file.abort()
        self._release()

    def _release(self) -> None:
        # Only after the rename or the removal: a sweep must never see the file unlocked.
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None


class LocalBlobs:
    """Objects as files under ``root``; see the module docstring for the on-disk layout."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root.resolve()

    def __repr__(self) -> str:
        return f"LocalBlobs({str(self.root)!r})"

    # -- writing ---------------------------------------------------------------------------------

    def put_stream(
        self, key: str, chunks: Iterable[bytes], *, max_bytes: int | None = None
    ) -> BlobInfo:
        pending = self._begin(key, max_bytes)
        try:
            for chunk in chunks:
                if chunk:
                    pending.write(chunk)
        except BaseException:
            pending.abort()
            raise
        return pending.commit()

    async def put_async_stream(
        self, key: str, chunks: AsyncIterable[bytes], *, max_bytes: int | None = None
    ) -> BlobInfo:
        # One worker thread per write runs every file operation in order, so the clean-up after a
        # failure or a cancellation always runs after the step in flight (even the opening of the
        # temp file), never beside it. Small chunks (an HTTP body arrives in ~64 KiB pieces) are
        # gathered into 1 MiB writes. The size limit is checked here, as bytes arrive.
        validate_key(key)
        self._check_max(max_bytes)
        loop = asyncio.get_running_loop()
        worker = ThreadPoolExecutor(1, thread_name_prefix="batchvision-blobs")
        opened: list[_PendingObject] = []

        def begin() -> None:
            opened.append(self._begin(key, max_bytes))

        def abort() -> None:
            for pending in opened:
                pending.abort()

        try:
            await loop.run_in_executor(worker, begin)
            pending = opened[0]
            received = 0
            buffer = bytearray()
            async for chunk in chunks:
                received += len(chunk)
                _check_limit(key, received, max_bytes)
                buffer += chunk
                if len(buffer) >= COPY_BLOCK:
                    data, buffer = bytes(buffer), bytearray()
                    await loop.run_in_executor(worker, pending.write, data)
            if buffer:
                await loop.run_in_executor(worker, pending.write, bytes(buffer))
            return await loop.run_in_executor(worker, pending.commit)
        except BaseException:
            # Shielded: a second cancellation must not withdraw the queued clean-up.
            await asyncio.shield(loop.run_in_executor(worker, abort))
            raise
        finally:
            worker.shutdown(wait=False)  # never join a thread on the event loop

    def put_bytes(self, key: str, data: bytes) -> BlobInfo:
        return self.put_stream(key, (data,))

    def concat(
        self, dest: str, sources: Sequence[str], *, max_bytes: int | None = None
    ) -> BlobInfo:
        for source in sources:
            validate_key(source)
        pending = self._begin(dest, max_bytes)
        try:
            for source in sources:
                with self.open(source) as file:
                    while block := file.read(COPY_BLOCK):
                        pending.write(block)
        except BaseException:
            pending.abort()
            raise
        return pending.commit()

    # -- reading ---------------------------------------------------------------------------------

    def open(self, key: str) -> BinaryIO:
        path = self._path(key)
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError as exc:
            # ELOOP: a symlink where an object should be (O_NOFOLLOW).
            if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.ELOOP):
                raise BlobNotFound(key) from exc
            raise
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise BlobNotFound(key)
        return os.fdopen(fd, "rb")

    def info(self, key: str) -> BlobInfo | None:
        return self._info(key, self._path(key))

    def list_prefix(self, prefix: str) -> list[BlobInfo]:
        found = [
            info for key, path in self._walk(prefix) if (info := self._info(key, path)) is not None
        ]
        found.sort(key=lambda info: info.key)
        return found

    # -- removing --------------------------------------------------------------------------------

    def delete(self, key: str) -> None:
        self._remove(self._path(key))

    def delete_prefix(self, prefix: str) -> int:
        count = 0
        for _key, path in self._walk(prefix):
            if self._remove(path):
                count += 1
        return count

    def sweep_temp(self, older_than_s: float) -> int:
        """Remove the ``.tmp-`` files no live write holds (any age), and orphaned sidecars and
        temp files of unknown ownership not modified for ``older_than_s`` seconds.

        Run it at start-up and now and then with an age well above the longest write (an upload of
        a large part over a slow link): it only matters where ownership cannot be told.
        """
        cutoff = time.time() - older_than_s
        removed = 0
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            directory = Path(dirpath)
            for name in filenames:
                if self._sweepable(directory, name, cutoff):
                    with contextlib.suppress(FileNotFoundError):
                        (directory / name).unlink()
                        removed += 1
        return removed

    @staticmethod
    def _sweepable(directory: Path, name: str, cutoff: float) -> bool:
        if name.startswith(TEMP_PREFIX):
            owned = _owned(directory / name)
            if owned is not None:
                return not owned
        elif not name.startswith(META_PREFIX) or (directory / name[len(META_PREFIX) :]).exists():
            return False
        try:
            return (directory / name).lstat().st_mtime <= cutoff
        except FileNotFoundError:
            return False

    # -- internals -------------------------------------------------------------------------------

    @staticmethod
    def _check_max(max_bytes: int | None) -> None:
        if max_bytes is not None and max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")

    def _begin(self, key: str, max_bytes: int | None) -> _PendingObject:
        self._check_max(max_bytes)
        return _PendingObject(self, key, max_bytes)

    def _path(self, key: str) -> Path:
        validate_key(key)
        path = self.root.joinpath(*key.split("/"))
        # The key alphabet keeps the path lexically under root; this catches a symlinked folder
        # planted inside root that would lead elsewhere.
        if not Path(os.path.realpath(path.parent)).is_relative_to(self.root):
            raise ValueError(f"blob key {key!r} resolves outside the blob root")
        return path

    def _create_temp(self, path: Path) -> tuple[AtomicFile, int | None]:
        """A temp file for `path` and the descriptor holding its lock. A concurrent delete may
        prune the freshly made directory before the temp file exists in it, or a sweep remove
        the file before it is locked; try again a few times in those cases."""
        for attempt in range(5):
            self._make_dirs(path.parent)
            try:
                temp = AtomicFile(path, temp_prefix=TEMP_PREFIX)  # mode follows the umask
            except FileNotFoundError:
                if attempt == 4:
                    raise
                continue
            try:
                return temp, _hold(temp.temp)
            except BaseException as exc:
                temp.abort()
                if not isinstance(exc, FileNotFoundError) or attempt == 4:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _make_dirs(self, directory: Path) -> None:
        missing: list[Path] = []
        current = directory
        while current != self.root and not current.is_dir():
            missing.append(current)
            current = current.parent
        for folder in reversed(missing):
            try:
                folder.mkdir()
            except FileExistsError:
                if not folder.is_dir():
                    key = folder.relative_to(self.root).as_posix()
                    raise BlobError(f"blob key {key} is an object, not a prefix") from None
            fsync_dir(folder.parent)

    def _meta_path(self, path: Path) -> Path:
        return path.with_name(META_PREFIX + path.name)

    def _write_meta(self, path: Path, etag: str, st: os.stat_result) -> None:
        """Write the etag sidecar (a cache, so best effort and not fsynced)."""
        record = {"etag": etag, "ino": st.st_ino, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        data = json.dumps(record).encode("ascii")
        with contextlib.suppress(OSError):
            write_atomic(self._meta_path(path), data, temp_prefix=TEMP_PREFIX, durable=False)

    def _read_meta(self, path: Path, st: os.stat_result) -> str | None:
        try:
            record = json.loads(self._meta_path(path).read_text(encoding="ascii"))
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict):
            return None
        described = (record.get("ino"), record.get("size"), record.get("mtime_ns"))
        etag = record.get("etag")
        if described != (st.st_ino, st.st_size, st.st_mtime_ns) or not isinstance(etag, str):
            return None
        return etag

    def _info(self, key: str, path: Path) -> BlobInfo | None:
        try:
            st = path.lstat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        etag = self._read_meta(path, st)
        if etag is None:
            # Stale or missing sidecar: hash the content, from the very file we stat.
            try:
                with self.open(key) as file:
                    st = os.fstat(file.fileno())
                    etag = _md5_of(file)
            except BlobNotFound:
                return None
            self._write_meta(path, etag, st)
        return BlobInfo(key, st.st_size, etag, _modified(st))

    def _walk(self, prefix: str) -> list[tuple[str, Path]]:
        """(key, path) of every object file whose key starts with ``prefix``."""
        validate_prefix(prefix)
        folder, _, partial = prefix.rpartition("/")
        base = self.root.joinpath(*folder.split("/")) if folder else self.root
        if not base.is_dir() or not Path(os.path.realpath(base)).is_relative_to(self.root):
            return []
        found: list[tuple[str, Path]] = []
        for dirpath, dirnames, filenames in os.walk(base):
            directory = Path(dirpath)
            top = directory == base
            dirnames[:] = [
                d for d in dirnames if not d.startswith(".") and (not top or d.startswith(partial))
            ]
            rel = directory.relative_to(self.root).as_posix()
            stem = "" if rel == "." else rel + "/"
            for name in filenames:
                if name.startswith("."):  # temp files and sidecars
                    continue
                key = stem + name
                if key.startswith(prefix):
                    found.append((key, directory / name))
        return found

    def _remove(self, path: Path) -> bool:
        """Unlink an object and its sidecar, then prune empty folders up to root."""
        try:
            path.unlink()
            removed = True
        except (FileNotFoundError, NotADirectoryError):
            removed = False
        except IsADirectoryError:
            return False  # a "folder" of other keys, not an object
        with contextlib.suppress(OSError):
            self._meta_path(path).unlink(missing_ok=True)
        if removed:
            fsync_dir(path.parent)
        folder = path.parent
        while folder != self.root and folder.is_relative_to(self.root):
            try:
                folder.rmdir()  # only succeeds when empty (no objects, no temp files)
            except OSError:
                break
            folder = folder.parent
        return removed


def make_blobs(settings: Settings) -> Blobs:
    """The store ``blob_store`` names; a missing client library fails here, at start-up."""
    if settings.blob_store == "local":
        return LocalBlobs(settings.data_dir / "blobs")
    try:
        import boto3  # noqa: F401
    except ImportError:
        raise RuntimeError(
            "BATCHVISION_BLOB_STORE=s3 needs the S3 client: pip install 'batchvision[s3]'"
        ) from None
    from batchvision.jobs.s3blobs import S3Blobs  # imports boto3, so only once it is there

    return S3Blobs.from_settings(settings)
