"""Request bodies must keep arriving: a client that stalls, or trickles a body below the minimum
rate, gets 408 `timeout` in its surface's language and the connection is closed."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable

from conftest import LiveServer

BODY_TIMEOUT_S = 1.0


def open_post(live: LiveServer, path: str, length: int) -> socket.socket:
    port = int(live.url.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    head = f"POST {path} HTTP/1.1\r\nhost: a\r\ncontent-type: application/json\r\n"
    sock.sendall(f"{head}content-length: {length}\r\n\r\n".encode())
    return sock


def answer_of(sock: socket.socket) -> tuple[int, dict[str, str], dict[str, object]]:
    data = b""
    while chunk := sock.recv(65536):  # to the end: the server closes the connection
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    status_line, *header_lines = head.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), headers, json.loads(body)


def test_a_body_that_stalls_is_answered_408_and_closed(serve: Callable[..., LiveServer]) -> None:
    live = serve(body_timeout_s=BODY_TIMEOUT_S)
    sock = open_post(live, "/v1/analyze", 1000)
    sock.sendall(b'{"images": [')
    started = time.monotonic()
    status, headers, body = answer_of(sock)
    assert BODY_TIMEOUT_S <= time.monotonic() - started < BODY_TIMEOUT_S + 1.0
    assert status == 408
    assert headers["connection"] == "close"
    assert "x-request-id" in headers
    assert body["error"]["code"] == "timeout"  # type: ignore[index]


def test_a_body_trickled_below_the_minimum_rate_is_cut_off(
    serve: Callable[..., LiveServer],
) -> None:
    """Every piece comes well within the idle timeout, but at 50 bytes/s against 1,000."""
    live = serve(body_timeout_s=BODY_TIMEOUT_S, min_body_rate_bytes_s=1000)
    sock = open_post(live, "/v1/analyze", 100_000)
    sock.settimeout(0.2)
    started = time.monotonic()
    answer = b""
    while not answer and time.monotonic() - started < 10:
        try:
            sock.sendall(b" " * 10)
            answer = sock.recv(65536, socket.MSG_PEEK)
        except TimeoutError:
            continue
    sock.settimeout(10)
    status, _, body = answer_of(sock)
    assert status == 408
    assert time.monotonic() - started < BODY_TIMEOUT_S + 1.5
    assert "bytes/s" in body["error"]["message"]  # type: ignore[index]


def test_the_408_speaks_the_language_of_the_surface_that_owns_the_path(
    serve: Callable[..., LiveServer],
) -> None:
    live = serve(body_timeout_s=BODY_TIMEOUT_S)
    sock = open_post(live, "/vision/v1/batchAnalyze", 1000)
    status, _, body = answer_of(sock)
    assert status == 408
    assert set(body) >= {"code", "message"}  # Yandex's google.rpc.Status, not {"error": …}
