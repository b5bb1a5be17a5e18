"""Atomic file writes, the one way batchvision puts a file in place.

A write goes to a temporary file in the target's directory, is fsynced, then renamed over the
target (`os.replace`), and the directory is fsynced. A reader, or a process started after a
crash, sees the old file or the new one, never a part of one. A failed write (an exception while
writing, a failed rename) removes its temporary file. Only a crash can leave one behind; it is
named `<temp_prefix><16 hex digits>` so whoever owns the directory can recognise and sweep it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from types import TracebackType
from typing import BinaryIO


def fsync_dir(directory: Path) -> None:
    """Make a rename or a new entry in `directory` durable. Best effort: not every platform can
    open a directory, and a failure here never undoes a write that already succeeded."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class AtomicFile:
    """A file that takes its final name only on `commit()`; `abort()` (or any failure) leaves the
    target as it was. As a context manager it commits on a clean exit and aborts on an exception.

    `mode`: the new file's permission bits, whatever the umask (default: 0o666 less the umask,
    like any new file). `overwrite=False` never replaces an existing target: the first writer
    keeps the name and `commit()` returns False for the others. `durable=False` skips the fsyncs,
    for caches that are cheap to rebuild.
    """

    def __init__(
        self,
        path: Path,
        *,
        temp_prefix: str | None = None,
        mode: int | None = None,
        overwrite: bool = True,
        durable: bool = True,
    ) -> None:
        self.path = path
        self.overwrite = overwrite
        self.durable = durable
        prefix = f".{path.name}.tmp-" if temp_prefix is None else temp_prefix
        self.temp = path.with_name(f"{prefix}{secrets.token_hex(8)}")
        # Exclusive create: never someone else's file. Raises FileNotFoundError when the
        # directory does not exist.
        fd = os.open(
            self.temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 if mode is None else mode
        )
        try:
            if mode is not None:
                os.fchmod(fd, mode)
            self.file: BinaryIO = os.fdopen(fd, "wb")
        except BaseException:
            os.close(fd)
            self.temp.unlink(missing_ok=True)
            raise

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.file.write(data)

    def stat(self) -> os.stat_result:
        """The temporary file's status with everything written so far flushed (its inode,
        size and mtime are the target's once committed)."""
        self.file.flush()
        return os.fstat(self.file.fileno())

    def commit(self) -> bool:
        """Put the file in place; False only with `overwrite=False` and a target already there.
        On any failure the temporary file is removed and the target is left as it was."""
        try:
            self.file.flush()
            if self.durable:
                os.fsync(self.file.fileno())
            self.file.close()
            placed = self._place()
        except BaseException:
            self.abort()
            raise
        if self.durable:
            fsync_dir(self.path.parent)
        return placed

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
        with contextlib.suppress(OSError):
            self.temp.unlink(missing_ok=True)

    def _place(self) -> bool:
        if self.overwrite:
            os.replace(self.temp, self.path)
            return True
        try:
            os.link(self.temp, self.path)  # fails if the target exists: the first writer wins
            placed = True
        except FileExistsError:
            placed = False
        except OSError:
            # A file system without hard links: a rename is atomic too, but could replace a
            # file another process created in the same instant.
            placed = not self.path.exists()
            if placed:
                os.replace(self.temp, self.path)
        self.temp.unlink(missing_ok=True)
        return placed

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def write_atomic(
    path: Path,
    data: bytes,
    *,
    temp_prefix: str | None = None,
    mode: int | None = None,
    overwrite: bool = True,
    durable: bool = True,
) -> bool:
    """Write `data` as the whole content of `path` in one atomic step (see `AtomicFile`)."""
    pending = AtomicFile(
        path, temp_prefix=temp_prefix, mode=mode, overwrite=overwrite, durable=durable
    )
    try:
        pending.write(data)
    except BaseException:
        pending.abort()
        raise
    return pending.commit()
