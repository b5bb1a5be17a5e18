"""Blob storage under attack, over real HTTP: a server killed mid-upload leaves no temp file once
it is back, and a full disk is a 507 that removes the partial file and keeps the server serving."""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import error_of, make_settings, spawn_server, start_server

MiB = 1024 * 1024


def temp_files(blob_root: Path) -> list[Path]:
    return [p for p in blob_root.rglob(".tmp-*") if p.is_file()]


def job_lines(count: int, padding: int = 0) -> bytes:
    line = {"id": "x", "skill": "metadata", "image": "data:,", "pad": "p" * padding}
    return b"".join(json.dumps({**line, "id": f"l{i}"}).encode() + b"\n" for i in range(count))


def _stalled_body(sent: threading.Event, never: threading.Event) -> Iterator[bytes]:
    """8 MiB of JSONL, then nothing: a client stuck mid-body when the server dies."""
    for _ in range(8):
        yield job_lines(1, padding=MiB)
    sent.set()
    never.wait(60)


def _post_until_killed(url: str, sent: threading.Event, never: threading.Event) -> None:
    with contextlib.suppress(httpx.HTTPError):  # the server is killed under it: the point
        httpx.post(f"{url}/v1/jobs", content=_stalled_body(sent, never), timeout=60)


def _wait_for(condition: object, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return True
        time.sleep(0.1)
    return False


def test_kill_9_mid_job_body_then_restart_sweeps_the_temp_file(tmp_path: Path) -> None:
    blob_root = tmp_path / "blobs"
    first = spawn_server(tmp_path)
    sent, never = threading.Event(), threading.Event()
    try:
        first.wait_ready()
        client = threading.Thread(target=_post_until_killed, args=(first.url, sent, never))
        client.start()
        assert sent.wait(30)
        assert _wait_for(lambda: sum(p.stat().st_size for p in temp_files(blob_root)) > MiB, 30)
        first.kill()
    finally:
        never.set()
        first.stop()
    [left] = temp_files(blob_root)  # what kill -9 leaves: seconds old, far from the hourly age
    assert left.stat().st_size > MiB

    second = spawn_server(tmp_path, port=first.port)
    try:
        second.wait_ready()
        # The start-up sweep runs beside the first requests; it takes well under a second here.
        assert _wait_for(lambda: not temp_files(blob_root), 10), temp_files(blob_root)
        assert httpx.get(f"{second.url}/healthz", timeout=10).status_code == 200
    finally:
        second.stop()


@pytest.fixture
def tiny_blob_disk(tmp_path: Path) -> Iterator[Path]:
    """The server's blob directory on a 2 MiB tmpfs, a real file system that fills up."""
    blob_root = tmp_path / "data" / "blobs"
    blob_root.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(blob_root)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.fail(f"a full-disk test needs to mount a 2 MiB tmpfs (root): {mounted.stderr}")
    try:
        yield blob_root
    finally:
        subprocess.run(["umount", str(blob_root)], check=True)


def test_a_full_disk_is_507_removes_the_partial_file_and_keeps_serving(
    tmp_path: Path, tiny_blob_disk: Path
) -> None:
    live = start_server(make_settings(tmp_path))
    try:
        with live.client() as client:
            too_big = client.post("/v1/jobs", content=job_lines(3, padding=MiB))
            message = error_of(too_big, 507, "insufficient_storage")
            assert "storage" in message and "Errno" not in message and "/" not in message
            assert temp_files(tiny_blob_disk) == []  # the partial 2 MiB went with the refusal
            fits = client.post("/v1/jobs", content=job_lines(5))
            assert fits.status_code == 202, fits.text
            assert client.get("/healthz").status_code == 200
    finally:
        live.stop()
