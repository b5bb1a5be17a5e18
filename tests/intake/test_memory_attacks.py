"""Memory attacks against a real `batchvision serve` subprocess, its memory read from /proc.

The attacks of the hardening probe, scaled to this small shared machine: many highly compressed
PNGs just under the pixel limit (each a few dozen KB on the wire, tens of MB decoded), and many
URL images that each pass `max_image_bytes` but together are far larger than a request body may
be. Before the decoded-pixel budget the server decoded every image of a request and held them all
until the request ended; before `max_fetched_bytes_per_request` it held every fetched body.
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from conftest import LiveServer, ServerProcess, make_settings, spawn_server, start_server
from local_http import RouteHandler, serve_routes

MiB = 1024 * 1024
SIDE = 4000  # 16 MP: 48 MB of RGB once decoded, 56 KB as a one-colour PNG
COUNT = 16


def flat_png(side: int, colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), colour).save(buffer, "PNG")
    return buffer.getvalue()


def noise_png(side: int) -> bytes:
    """A PNG that does not compress: about 3 bytes on the wire per pixel."""
    pixels = np.random.default_rng(side).integers(0, 255, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def status_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} in /proc/{pid}/status")


class PeakRss:
    """The process's RSS high-water mark from now on (/proc/PID/clear_refs resets VmHWM)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.idle_mb = status_mb(pid, "VmRSS")
        Path(f"/proc/{pid}/clear_refs").write_text("5")

    def growth_mb(self) -> float:
        return status_mb(self.pid, "VmHWM") - self.idle_mb


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Any]:
    started: list[ServerProcess] = []

    def _spawn(**settings: str) -> ServerProcess:
        server = spawn_server(tmp_path / f"data{len(started)}", worker_threads="2", **settings)
        started.append(server)
        server.wait_ready()
        return server

    yield _spawn
    for server in started:
        server.stop()


def analyze(url: str, files: list[tuple[str, bytes]], tasks: list[dict[str, Any]]) -> Any:
    parts = [("images", (name, data, "image/png")) for name, data in files]
    response = httpx.post(
        f"{url}/v1/analyze", files=parts, data={"tasks": json.dumps(tasks)}, timeout=300
    )
    assert response.status_code == 200, response.text
    return response.json()


DETECT = [{"skill": "detect", "params": {}}]


def warm_up(url: str) -> None:
    """Load the model and fill the allocator's pools before the idle figure is read."""
    body = analyze(url, [("warm.png", flat_png(640))], DETECT)
    assert body["results"][0]["status"] == "ok"


def test_many_large_pngs_keep_the_server_within_its_decoded_pixel_budget(spawn: Any) -> None:
    server = spawn(max_decoded_mb="256", max_decoded_mb_per_request="256")
    warm_up(server.url)
    peak = PeakRss(server.proc.pid)
    image = flat_png(SIDE)
    body = analyze(server.url, [(f"big{i}.png", image) for i in range(COUNT)], DETECT)
    growth = peak.growth_mb()
    # Held at once before the budget: 16 x 48 MB of RGB (plus Pillow's copies while decoding).
    assert growth < 400, f"RSS grew {growth:.0f} MB for a 256 MB decoded-pixel budget"
    assert [r["status"] for r in body["results"]] == ["ok"] * COUNT
    assert {r["image"]["width"] for r in body["results"]} == {SIDE}


def test_full_resolution_skill_images_wait_for_room_and_are_all_answered(spawn: Any) -> None:
    server = spawn(max_decoded_mb="200", max_decoded_mb_per_request="200")
    warm_up(server.url)
    peak = PeakRss(server.proc.pid)
    image = flat_png(3000)  # 72 MB to decode, 27 MB kept at full size for the barcode reader
    files = [(f"scan{i}.png", image) for i in range(COUNT)]
    body = analyze(server.url, files, [{"skill": "barcode", "params": {}}])
    growth = peak.growth_mb()
    assert growth < 330, f"RSS grew {growth:.0f} MB for a 200 MB decoded-pixel budget"
    assert [r["status"] for r in body["results"]] == ["ok"] * COUNT
    assert all(r["outputs"]["barcode"]["barcodes"] == [] for r in body["results"])


@pytest.fixture
def small_budget(tmp_path: Path) -> Iterator[LiveServer]:
    live = start_server(make_settings(tmp_path, max_decoded_mb_per_request=64))
    yield live
    live.stop()


def test_an_image_that_can_never_fit_the_request_budget_fails_alone(
    small_budget: LiveServer,
) -> None:
    files = [("huge.png", flat_png(SIDE)), ("small.png", flat_png(800))]
    body = analyze(small_budget.url, files, [{"skill": "barcode", "params": {}}])
    huge, small = body["results"]
    assert huge["status"] == "error"
    [error] = huge["errors"]
    assert error["code"] == "image_too_large"
    assert "123 MB" in error["message"]  # 4000² x 8 bytes, in MiB and "64 MB" in error["message"]
    assert small["status"] == "ok"


# --- URL images -------------------------------------------------------------------------------

URL_COUNT = 16


@pytest.fixture(scope="module")
def big_url_images() -> Iterator[tuple[str, int]]:
    """URL_COUNT paths, each serving the same 8.7 MB PNG (under max_image_bytes on its own)."""
    image = noise_png(1700)

    def serve(handler: RouteHandler) -> None:
        handler.send(200, image, Content_Type="image/png")

    routes = {f"/big{i}.png": serve for i in range(URL_COUNT)}
    with serve_routes(routes) as base:
        yield base, len(image)


def test_url_images_together_are_capped_per_request(
    spawn: Any, big_url_images: tuple[str, int]
) -> None:
    base, size = big_url_images
    cap = 32 * MiB
    server = spawn(url_allow_hosts="127.0.0.1", max_fetched_bytes_per_request=str(cap))
    warm_up(server.url)
    peak = PeakRss(server.proc.pid)
    images = [{"url": f"{base}/big{i}.png", "id": f"u{i}"} for i in range(URL_COUNT)]
    payload = {"images": images, "tasks": [{"skill": "metadata"}]}
    response = httpx.post(f"{server.url}/v1/analyze", json=payload, timeout=300)
    growth = peak.growth_mb()
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    answered = [r for r in results if r["status"] == "ok"]
    refused = [r for r in results if r["status"] == "error"]
    assert len(answered) == cap // size  # 3 whole images fit in 32 MiB
    assert len(answered) + len(refused) == URL_COUNT
    for result in refused:
        [error] = result["errors"]
        assert error["code"] == "image_too_large"
        assert "max_fetched_bytes_per_request" in error["message"]
    # Before the cap: all 16 bodies (139 MB) held together, then decoded.
    assert growth < 120, f"RSS grew {growth:.0f} MB with a 32 MiB cap on fetched bytes"


def test_images_of_concurrent_requests_share_the_server_budget(spawn: Any) -> None:
    server = spawn(max_decoded_mb="256", max_decoded_mb_per_request="256")
    warm_up(server.url)
    peak = PeakRss(server.proc.pid)
    image = flat_png(SIDE)
    bodies: list[Any] = []

    def one_request() -> None:
        bodies.append(analyze(server.url, [(f"c{i}.png", image) for i in range(6)], DETECT))

    threads = [threading.Thread(target=one_request) for _ in range(3)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    growth = peak.growth_mb()
    assert time.monotonic() - started < 300
    assert len(bodies) == 3
    assert all(r["status"] == "ok" for body in bodies for r in body["results"])
    assert growth < 400, f"RSS grew {growth:.0f} MB for a 256 MB server-wide budget"
