"""Slow and idle clients against `batchvision serve` in a subprocess held to 1,024 file
descriptors: 1,100 connections that never finish their headers or their body must not stop the
server answering, and each must be cut off within its deadline."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import selectors
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from conftest import MODELS, ServerProcess, coco_image, free_port

SLOW_CONNECTIONS = 1_100
FD_LIMIT = 1_024
HEADER_TIMEOUT_S = 3.0
BODY_TIMEOUT_S = 3.0
# The header sweep runs every quarter deadline; the rest is the wait to be accepted among 1,100
# and scheduling on a shared 2-core box (measured up to 5.4 s). Today's server: never closed.
CLOSE_WITHIN_S = 1.25 * max(HEADER_TIMEOUT_S, BODY_TIMEOUT_S) + 3.0
ANSWER_WITHIN_S = 2.0
PROBE_FOR_S = 10.0

SLOW_HEADERS = b"GET /healthz HTTP/1.1\r\nhost: slow\r\n"
SLOW_BODY = (
    b"POST /v1/analyze HTTP/1.1\r\nhost: slow\r\ncontent-type: application/json\r\n"
    b"content-length: 100000\r\n\r\n{"
)


def spawn_limited_server(tmp_path: Path) -> ServerProcess:
    """`batchvision serve` with `ulimit -n 1024`; its log goes to a file (a pipe nobody reads
    would block a server that logs a lot) so its size can be checked."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHVISION_")}
    port = free_port()
    env.update(
        BATCHVISION_PORT=str(port),
        BATCHVISION_MODEL_DIRS=str(MODELS),
        BATCHVISION_DATA_DIR=str(tmp_path / "data"),
        BATCHVISION_AUTH="disabled",
        BATCHVISION_HEADER_TIMEOUT_S=str(HEADER_TIMEOUT_S),
        BATCHVISION_BODY_TIMEOUT_S=str(BODY_TIMEOUT_S),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "batchvision.cli", "serve", "--log-level", "warning"],
        env=env,
        stdout=(tmp_path / "server.log").open("w"),
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT)),
    )
    return ServerProcess(proc, port)


@pytest.fixture
def limited_server(tmp_path: Path) -> Iterator[ServerProcess]:
    server = spawn_limited_server(tmp_path)
    try:
        server.wait_ready()
        yield server
    finally:
        server.kill()


@dataclass
class SlowConnection:
    sock: socket.socket
    trickle: bytes
    opened_at: float
    closed_at: float | None = None
    answer: bytes = b""


@dataclass
class Slowloris:
    """Opens slow connections of three kinds (silent, headers a line a second, body a byte a
    second) and records when the server closes each one and what it answered."""

    port: int
    connections: list[SlowConnection] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        selector = selectors.DefaultSelector()
        for index in range(SLOW_CONNECTIONS):
            connection = self._open(index)
            self.connections.append(connection)
            selector.register(connection.sock, selectors.EVENT_READ, connection)
        next_trickle = time.monotonic() + 1.0
        while not self.stop.is_set() and self.still_open():
            for key, _ in selector.select(timeout=0.1):
                self._read(selector, key.data)
            if time.monotonic() >= next_trickle:
                next_trickle += 1.0
                self._trickle()
        selector.close()

    def _open(self, index: int) -> SlowConnection:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        start, trickle = [(b"", b""), (SLOW_HEADERS, b"x-slow: 1\r\n"), (SLOW_BODY, b" ")][
            index % 3
        ]
        if start:
            sock.sendall(start)
        sock.setblocking(False)
        return SlowConnection(sock, trickle, time.monotonic())

    def _read(self, selector: selectors.BaseSelector, connection: SlowConnection) -> None:
        try:
            data = connection.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        connection.answer += data
        if not data:
            connection.closed_at = time.monotonic()
            selector.unregister(connection.sock)

    def _trickle(self) -> None:
        for connection in self.connections:
            if connection.trickle and connection.closed_at is None:
                # A send to a connection the server closed fails; the reader records when.
                with contextlib.suppress(OSError):
                    connection.sock.send(connection.trickle)

    def still_open(self) -> int:
        return sum(1 for c in self.connections if c.closed_at is None)

    def close(self) -> None:
        self.stop.set()
        for connection in self.connections:
            connection.sock.close()


def timed(name: str, send: Callable[[], httpx.Response]) -> tuple[str, float]:
    started = time.monotonic()
    try:
        response = send()
        outcome = f"{name} {response.status_code}"
    except httpx.HTTPError as exc:
        outcome = f"{name} {type(exc).__name__}"
    return outcome, time.monotonic() - started


def probe(url: str) -> list[tuple[str, float]]:
    """A fresh connection each time, as a new client would: healthz, then a real detection."""
    files = [("images", ("room.jpg", coco_image(), "image/jpeg"))]
    tasks = {"tasks": json.dumps([{"skill": "detect"}])}
    return [
        timed("healthz", lambda: httpx.get(f"{url}/healthz", timeout=ANSWER_WITHIN_S)),
        timed(
            "analyze",
            lambda: httpx.post(
                f"{url}/v1/analyze", files=files, data=tasks, timeout=ANSWER_WITHIN_S
            ),
        ),
    ]


def raise_own_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = SLOW_CONNECTIONS + 512
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


def test_1100_slow_clients_neither_starve_healthz_and_analyze_nor_outlive_their_deadline(
    limited_server: ServerProcess, tmp_path: Path
) -> None:
    raise_own_fd_limit()
    warm_up = probe(limited_server.url)  # loads the detector before the attack
    assert [outcome for outcome, _ in warm_up] == ["healthz 200", "analyze 200"]
    attack = Slowloris(limited_server.port)
    attacker = threading.Thread(target=attack.run, daemon=True)
    attacker.start()
    probes = []
    try:
        until = time.monotonic() + PROBE_FOR_S
        while time.monotonic() < until:
            probes.extend(probe(limited_server.url))
        attacker.join(timeout=CLOSE_WITHIN_S)
        lifetimes = [(c.closed_at or time.monotonic()) - c.opened_at for c in attack.connections]
        still_open = attack.still_open()
    finally:
        attack.close()
    log = (tmp_path / "server.log").read_bytes()
    log_bytes = len(log)
    print(  # the figures in the README come from `pytest -s` on this test
        f"\nprobes {len(probes)}, worst {max(t for _, t in probes):.2f}s; slow connections "
        f"{len(attack.connections)}, still open {still_open}"
        f", longest {max(lifetimes):.1f}s; server log {log_bytes} bytes"
    )
    slow_probes = [(o, round(t, 2)) for o, t in probes if o[-3:] != "200" or t > ANSWER_WITHIN_S]
    assert not slow_probes, f"{len(slow_probes)} of {len(probes)} probes failed: {slow_probes[:5]}"
    assert len(attack.connections) == SLOW_CONNECTIONS
    assert max(lifetimes) <= CLOSE_WITHIN_S, f"longest slow connection {max(lifetimes):.1f}s"
    answers = [c.answer.split(b"\r\n", 1)[0] for c in attack.connections if c.answer]
    assert b"HTTP/1.1 408 Request Timeout" in answers  # the slow bodies got a reason
    timed_out = next(c.answer for c in attack.connections if c.answer.startswith(b"HTTP/1.1 408"))
    assert json.loads(timed_out.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "timeout"
    assert b"Too many open files" not in log  # the cap holds descriptors in reserve
