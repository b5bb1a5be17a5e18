"""Helpers shared by the client tests: one keyed server per module, a key per test (jobs and
usage are per key, so tests sharing a server never see each other's), images that exist."""

from __future__ import annotations

import base64
import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchvision.accounts.keys import KeyStore
from batchvision.core.db import make_engine
from conftest import COCO_IMAGES, LiveServer, coco_image, make_settings, start_server
from local_http import RouteHandler, serve_routes

PHOTO = COCO_IMAGES / "000000000139.jpg"  # a living room: people, a tv, chairs


@dataclass
class KeyedServer:
    live: LiveServer
    store: KeyStore

    @property
    def url(self) -> str:
        return self.live.url

    def new_key(self, name: str | None = None) -> str:
        return self.store.create(name or f"client-user-{uuid.uuid4().hex[:8]}").secret

    def stop(self) -> None:
        self.live.stop()
        self.store.engine.dispose()


def keyed_server(data_dir: Path) -> KeyedServer:
    """Auth required, small chunks and result files (several files per job), and URL intake
    allowed from 127.0.0.1 (the tests' own image servers)."""
    settings = make_settings(
        data_dir,
        auth="required",
        job_chunk_lines=2,
        job_output_lines=4,
        url_allow_hosts=["127.0.0.1"],
    )
    live = start_server(settings)
    return KeyedServer(live, KeyStore(make_engine(live.settings)))


def detect_lines(count: int) -> list[dict[str, Any]]:
    image = base64.b64encode(coco_image()).decode()
    return [{"id": f"x{i}", "skill": "detect", "image": image} for i in range(count)]


def write_jsonl(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def result_lines(paths: list[Path]) -> list[dict[str, Any]]:
    return [json.loads(line) for path in paths for line in path.read_text().splitlines()]


def labels(objects: list[dict[str, Any]]) -> set[str]:
    return {str(found["label"]) for found in objects}


@contextmanager
def photo_server() -> Iterator[str]:
    """An http URL of the photo."""

    def photo(handler: RouteHandler) -> None:
        handler.send(200, coco_image(), Content_Type="image/jpeg")

    with serve_routes({"/photo.jpg": photo}) as base:
        yield f"{base}/photo.jpg"


@contextmanager
def stalled_photo() -> Iterator[str]:
    """An image URL whose answer waits until the block ends: a job fetching it stays running
    for as long as the test needs."""
    release = threading.Event()

    def hold(handler: RouteHandler) -> None:
        release.wait(30)
        handler.send(200, coco_image(), Content_Type="image/jpeg")

    with serve_routes({"/photo.jpg": hold}) as base:
        try:
            yield f"{base}/photo.jpg"
        finally:
            release.set()
