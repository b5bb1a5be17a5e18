"""The database's disk fills up under a running server, over real HTTP: every surface answers a
write that needs the database with 507 `insufficient_storage` in its own error language and a
generic message, reads and health go on, and once there is room again writes succeed."""

from __future__ import annotations

import base64
import contextlib
import errno
import io
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from batchvision.accounts.keys import KeyStore
from batchvision.core.db import make_engine
from conftest import LiveServer, error_of, make_settings, start_server


def png_b64() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 200, 30)).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


@pytest.fixture
def tiny_database_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs for the SQLite file: a real file system that fills up."""
    folder = tmp_path / "db"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.fail(f"a full-database test needs to mount a 4 MiB tmpfs (root): {mounted.stderr}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def fill(filler: Path) -> None:
    """Write until the file system refuses even one more 512-byte write."""
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for block in (64 * 1024, 4096, 512):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * block)
    finally:
        os.close(fd)


def empty_the_wal(database: Path) -> None:
    """Move the WAL's pages into the database file and cut the WAL to 0 bytes, so that the next
    write must grow a file on the full disk (a WAL keeps its size and is reused otherwise)."""
    with contextlib.closing(sqlite3.connect(database)) as connection:
        busy, _, _ = connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    assert busy == 0


@pytest.fixture
def full_database(tmp_path: Path, tiny_database_disk: Path) -> Iterator[tuple[LiveServer, str]]:
    """A keyed server whose database disk is full, after one request that stored its usage."""
    database = tiny_database_disk / "batchvision.db"
    settings = make_settings(tmp_path, auth="required", database_url=f"sqlite:///{database}")
    live = start_server(settings)
    try:
        secret = KeyStore(make_engine(settings)).create("dora", credits=100).secret
        with live.client() as client:  # one request before the disk fills: the server works
            assert analyze(client, secret).json()["results"][0]["status"] == "ok"
        empty_the_wal(database)
        fill(tiny_database_disk / "filler")
        yield live, secret
    finally:
        live.stop()


def analyze(client: httpx.Client, secret: str) -> httpx.Response:
    body = {"images": [png_b64()], "tasks": [{"skill": "detect"}]}
    return client.post("/v1/analyze", json=body, headers={"Authorization": f"Bearer {secret}"})


def test_a_full_database_disk_is_507_on_every_surface_and_the_server_keeps_serving(
    full_database: tuple[LiveServer, str], tiny_database_disk: Path
) -> None:
    live, secret = full_database
    auth = {"Authorization": f"Bearer {secret}"}
    with live.client() as client:
        message = error_of(analyze(client, secret), 507, "insufficient_storage")
        assert "storage" in message
        assert "database" not in message and "Errno" not in message and "/" not in message
        job = client.post(
            "/v1/jobs", content=b'{"skill": "metadata", "image": "data:,"}\n', headers=auth
        )
        error_of(job, 507, "insufficient_storage")
        detect = client.post("/api/v1/batch-detect", json={"images": [png_b64()]}, headers=auth)
        error_of(detect, 507, "insufficient_storage")
        yandex = client.post(
            "/vision/v1/batchAnalyze",
            json={
                "analyzeSpecs": [{"content": png_b64(), "features": [{"type": "TEXT_DETECTION"}]}]
            },
            headers=auth,
        )
        assert yandex.status_code == 507, yandex.text
        assert yandex.json() == {
            "code": 8,  # google.rpc RESOURCE_EXHAUSTED
            "message": message,
            "details": [],
        }
        assert client.get("/healthz").status_code == 200
        usage = client.get("/v1/usage", headers=auth)  # reads still answer
        assert usage.status_code == 200 and usage.json()["balance"] == 99  # the first request

        (tiny_database_disk / "filler").unlink()
        assert analyze(client, secret).json()["results"][0]["status"] == "ok"
        # Nothing the refused requests reserved was kept: only the two that ran were charged.
        assert client.get("/v1/usage", headers=auth).json()["balance"] == 98


def test_a_full_disk_error_is_recognised_through_its_wrappers() -> None:
    from sqlalchemy.exc import OperationalError

    from batchvision.core.db import storage_is_full

    full = sqlite3.OperationalError("database or disk is full")
    full.sqlite_errorcode = sqlite3.SQLITE_FULL  # type: ignore[attr-defined]
    wrapped = OperationalError("INSERT ...", {}, full)
    assert storage_is_full(wrapped)
    assert storage_is_full(OSError(errno.ENOSPC, "No space left on device"))
    locked = sqlite3.OperationalError("database is locked")
    locked.sqlite_errorcode = sqlite3.SQLITE_BUSY  # type: ignore[attr-defined]
    assert not storage_is_full(OperationalError("INSERT ...", {}, locked))
    assert not storage_is_full(ValueError("full"))
