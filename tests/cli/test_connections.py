"""The connection guard of `batchvision serve` around the real app over real HTTP (in-process
here, so each test costs a second, not a model load): the cap, eviction, quiet repeated logs."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from batchvision.api.app import create_app
from batchvision.cli.connections import RepeatFilter, guarded_protocol
from batchvision.cli.serve import connection_guard
from conftest import LiveServer, free_port, make_settings

SLOW_BODY = (
    b"POST /v1/analyze HTTP/1.1\r\nhost: slow\r\ncontent-type: application/json\r\n"
    b"content-length: 1000\r\n\r\n{"
)


@pytest.fixture
def guarded_server(tmp_path: Path) -> Iterator[LiveServer]:
    """The app behind the same uvicorn protocol `batchvision serve` uses, capped at 4."""
    settings = make_settings(tmp_path, max_connections=4, header_timeout_s=2.0)
    port = free_port()
    config = uvicorn.Config(
        create_app(settings),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        http=guarded_protocol(connection_guard(settings)),
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    live = LiveServer(f"http://127.0.0.1:{port}", settings, server, thread)
    yield live
    live.stop()


def connect(live: LiveServer, first_bytes: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", int(live.url.rsplit(":", 1)[1])), timeout=5)
    if first_bytes:
        sock.sendall(first_bytes)
    time.sleep(0.05)  # the server sees them in this order
    return sock


def read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_past_the_cap_with_every_connection_busy_a_new_one_gets_503_at_once(
    guarded_server: LiveServer,
) -> None:
    busy = [connect(guarded_server, SLOW_BODY) for _ in range(4)]
    try:
        started = time.monotonic()
        answer = read_all(connect(guarded_server, b"GET /healthz HTTP/1.1\r\nhost: a\r\n\r\n"))
        assert time.monotonic() - started < 1.0
    finally:
        for sock in busy:
            sock.close()
    assert answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert b"retry-after: 1\r\n" in answer
    assert answer.endswith(
        b'"code":"overloaded","message":"too many open connections; retry shortly"}}'
    )


def test_past_the_cap_the_connection_idle_longest_makes_room_for_a_new_client(
    guarded_server: LiveServer,
) -> None:
    idle = [connect(guarded_server) for _ in range(4)]
    try:
        assert httpx.get(f"{guarded_server.url}/healthz", timeout=2).status_code == 200
        assert read_all(idle[0]) == b""  # closed by the server, nothing lost: it sent nothing
        idle[1].settimeout(0.3)
        with pytest.raises(TimeoutError):
            idle[1].recv(1)  # the others are untouched until their own deadline
    finally:
        for sock in idle:
            sock.close()


def closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except OSError:
        return True  # reset: closed while our bytes were in flight


def test_a_keep_alive_connection_must_finish_its_next_request_headers_within_the_deadline(
    guarded_server: LiveServer,
) -> None:
    sock = connect(guarded_server, b"GET /healthz HTTP/1.1\r\nhost: a\r\n\r\n")
    assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK\r\n")
    sock.settimeout(0.1)
    sock.sendall(b"GET /healthz HTTP/1.1\r\n")
    started = time.monotonic()
    with sock:
        while not closed_by_server(sock) and time.monotonic() - started < 10:
            with contextlib.suppress(OSError):
                sock.sendall(b"x-slow: 1\r\n")  # a header line every tenth of a second
    assert 2.0 <= time.monotonic() - started <= 1.25 * 2.0 + 0.5


def test_repeated_log_lines_are_let_through_once_per_window_with_a_count() -> None:
    records = []
    logger = logging.getLogger("test.repeat")
    logger.propagate = False
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    logger.addFilter(RepeatFilter(window_s=0.2))
    for _ in range(1000):
        logger.error("socket.accept() out of system resource")
    time.sleep(0.25)
    logger.error("socket.accept() out of system resource")
    assert [r.getMessage() for r in records] == [
        "socket.accept() out of system resource",
        "socket.accept() out of system resource (999 more like this in the last 0.2s)",
    ]
