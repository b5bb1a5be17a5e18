"""core/fsutil: an atomic write leaves the old content or the new, never a part, and never a
temporary file after a failure."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from batchvision.core.fsutil import AtomicFile, write_atomic
from conftest import REPO

OLD = b"old " * 256 * 1024  # 1 MiB: large enough that a torn write would show
NEW = b"new!" * 512 * 1024  # 2 MiB, a different size too


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_write_replaces_the_whole_content_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    write_atomic(target, OLD)
    write_atomic(target, NEW)
    assert target.read_bytes() == NEW
    assert _names(tmp_path) == ["out.json"]


def test_a_reader_sees_the_old_or_the_new_content_never_a_mix(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    write_atomic(target, OLD)
    seen: set[bytes] = set()
    done = threading.Event()

    def read_until_done() -> None:
        while not done.is_set():
            seen.add(target.read_bytes())

    reader = threading.Thread(target=read_until_done)
    reader.start()
    try:
        for i in range(40):
            write_atomic(target, NEW if i % 2 == 0 else OLD)
    finally:
        done.set()
        reader.join()
    assert seen <= {OLD, NEW}
    assert seen  # the reader did read


def test_an_exception_while_writing_keeps_the_old_content_and_removes_the_temp(
    tmp_path: Path,
) -> None:
    target = tmp_path / "out.json"
    write_atomic(target, OLD)

    def half_then_fail() -> None:
        with AtomicFile(target) as pending:
            pending.write(NEW[: len(NEW) // 2])
            raise RuntimeError("source failed")

    with pytest.raises(RuntimeError, match="source failed"):
        half_then_fail()
    assert target.read_bytes() == OLD
    assert _names(tmp_path) == ["out.json"]


def test_a_failed_rename_removes_the_temp(tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.mkdir()
    (target / "inside").write_bytes(b"x")  # a non-empty directory cannot be replaced
    with pytest.raises(OSError):
        write_atomic(target, NEW)
    assert _names(tmp_path) == ["taken"]
    assert _names(target) == ["inside"]


def test_a_missing_directory_is_an_error_and_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        write_atomic(tmp_path / "no" / "such" / "dir.json", NEW)
    assert _names(tmp_path) == []


def test_without_overwrite_the_first_writer_keeps_the_name(tmp_path: Path) -> None:
    target = tmp_path / "key"
    assert write_atomic(target, b"first", overwrite=False) is True
    assert write_atomic(target, b"second", overwrite=False) is False
    assert target.read_bytes() == b"first"
    assert _names(tmp_path) == ["key"]


def test_mode_is_applied_whatever_the_umask(tmp_path: Path) -> None:
    old_umask = os.umask(0o000)
    try:
        write_atomic(tmp_path / "private", b"s", mode=0o600)
        write_atomic(tmp_path / "plain", b"p")
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE((tmp_path / "private").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "plain").stat().st_mode) == 0o666  # like any new file


CRASH_MID_WRITE = """
import os, signal, sys
from pathlib import Path
from batchvision.core.fsutil import AtomicFile
pending = AtomicFile(Path(sys.argv[1]), temp_prefix=".tmp-")
pending.write(b"new!" * 512 * 1024)
pending.file.flush()
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_process_killed_mid_write_leaves_the_old_content(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    write_atomic(target, OLD)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    process = subprocess.run(
        [sys.executable, "-c", CRASH_MID_WRITE, str(target)], env=env, check=False
    )
    assert process.returncode == -signal.SIGKILL
    assert target.read_bytes() == OLD
    # Only a crash leaves a temp file, under the prefix its owner sweeps.
    leftovers = [name for name in _names(tmp_path) if name != "out.json"]
    assert len(leftovers) == 1 and leftovers[0].startswith(".tmp-")
