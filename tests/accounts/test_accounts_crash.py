"""Credits survive a crash, for real: a `batchvision serve` subprocess killed with SIGKILL while a
metered /v1/analyze holds its reservation, then restarted on the same database. Start-up refunds
the reservation that never settled, so the key's balance plus the credits its usage ledger
charged equals every credit ever added."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from accounts_support import analyze, bearer, good_image

from batchvision.accounts.keys import KeyStore
from batchvision.core.db import make_engine
from batchvision.core.settings import Settings
from conftest import LiveServer, ServerProcess, spawn_server

CREDITS = 50
HELD_IMAGES = 10


class HangingImages:
    """An image server that accepts the GET and never answers, so the analyze request that
    fetches from it stays in flight (its credits reserved) until the test kills the server."""

    def __init__(self) -> None:
        self.requested = threading.Event()
        self.release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requested.set()
                outer.release.wait(60)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/slow.jpg"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hanging() -> Iterator[HangingImages]:
    images = HangingImages()
    yield images
    images.close()


def _serve(data_dir: Path, port: int | None = None) -> ServerProcess:
    server = spawn_server(data_dir, port, auth="required", url_allow_hosts="127.0.0.1")
    server.wait_ready()
    return server


def _store(data_dir: Path) -> KeyStore:
    return KeyStore(make_engine(Settings(data_dir=data_dir)))


def _held_body(image_url: str) -> dict[str, Any]:
    """Nine readable images and one whose URL hangs: ten credits held while it does."""
    images = [good_image(f"img{i}") for i in range(HELD_IMAGES - 1)]
    return {"images": [*images, {"url": image_url, "id": "slow"}], "tasks": ["metadata"]}


def _post_in_background(url: str, secret: str, body: dict[str, Any]) -> threading.Thread:
    def post() -> None:
        with contextlib.suppress(httpx.TransportError):  # the server is killed under it
            httpx.post(f"{url}/v1/analyze", json=body, headers=bearer(secret), timeout=60)

    thread = threading.Thread(target=post, daemon=True)
    thread.start()
    return thread


def _balance_and_charged(store: KeyStore, key_id: int) -> tuple[int, int]:
    info = store.get(key_id)
    assert info is not None and info.credits is not None
    return info.credits, sum(day["credits"] for day in store.usage(key_id))


def test_kill_9_during_a_metered_analyze_then_restart_refunds_the_held_credits(
    tmp_path: Path, hanging: HangingImages
) -> None:
    first = _serve(tmp_path)
    try:
        store = _store(tmp_path)
        key = store.create("crashy", credits=CREDITS)
        with httpx.Client(base_url=first.url, timeout=60) as client:
            assert analyze(client, key.secret, images=2).status_code == 200
        request = _post_in_background(first.url, key.secret, _held_body(hanging.url))
        assert hanging.requested.wait(30), "the analyze request never fetched its URL image"
        # Reserved while it runs: the two charged, the ten held.
        assert _balance_and_charged(store, key.info.id) == (CREDITS - 2 - HELD_IMAGES, 2)
        first.kill()
        request.join(30)
    finally:
        first.stop()

    second = _serve(tmp_path, first.port)
    try:
        balance, charged = _balance_and_charged(_store(tmp_path), key.info.id)
        assert (balance, charged) == (CREDITS - 2, 2)
        assert balance + charged == CREDITS
        with httpx.Client(base_url=second.url, timeout=60) as client:
            usage = client.get("/v1/usage", headers=bearer(key.secret)).json()
            assert analyze(client, key.secret, images=3).status_code == 200
        assert sum(day["requests"] for day in usage["days"]) == 1  # the killed one never ended
        assert _balance_and_charged(_store(tmp_path), key.info.id) == (CREDITS - 5, 5)
    finally:
        second.stop()


def test_a_replica_starting_beside_a_live_one_leaves_its_young_reservation_alone(
    serve: Callable[..., LiveServer], hanging: HangingImages
) -> None:
    """Replicas share one database: with a grace period, a replica's start-up refunds only
    reservations older than it, so a request in flight on another replica is billed once."""
    first = serve(auth="required", url_allow_hosts=["127.0.0.1"])
    store = KeyStore(make_engine(first.settings))
    key = store.create("shared", credits=CREDITS)
    request = _post_in_background(first.url, key.secret, _held_body(hanging.url))
    assert hanging.requested.wait(30), "the analyze request never fetched its URL image"
    serve(auth="required", credit_reservation_grace_s=600)
    assert _balance_and_charged(store, key.info.id) == (CREDITS - HELD_IMAGES, 0)
    hanging.release.set()  # the URL image fails: refunded, the nine others charged
    request.join(60)
    assert _balance_and_charged(store, key.info.id) == (CREDITS - 9, 9)
