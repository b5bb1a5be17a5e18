"""Connection limits for `batchvision serve`: header deadlines, a connection cap, quiet logs.

uvicorn waits for request headers forever (its keep-alive timer stops at the first byte), and
accepts connections until the process runs out of file descriptors; measured: 1,100 connections
that never finish their headers against a server with `ulimit -n 1024` left it answering nobody
for 40 s while asyncio logged "Too many open files" over and over. Here:

- A connection must finish its request headers within `header_timeout_s` of connecting, or of
  the end of its previous response (keep-alive); past it the connection is closed. A sweep every
  quarter of the deadline (at most 1 s) checks, so a connection lives at most 1.25 times it.
- At most `max_connections` are open (default: half the open-file limit, see
  `default_max_connections`). A new connection past the cap
  first evicts the connection that has waited longest for headers (idle keep-alive or a slow
  client: nothing is lost, the way nginx reuses idle connections); when every connection is busy
  with a request, the new one gets an immediate 503 `overloaded` and is closed.
- Repeated identical log lines from asyncio and uvicorn (accept errors) are logged at most once
  per 10 s, with a count of the ones left out.

uvicorn's own `limit_concurrency` is not used: it refuses requests only once their headers have
arrived, which a slow client never does, and it counts the very connections the cap evicts.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from dataclasses import dataclass
from typing import Any, ClassVar, cast

from uvicorn.protocols.http.auto import AutoHTTPProtocol

log = logging.getLogger(__name__)

_OVERLOADED_BODY = (
    b'{"error":{"code":"overloaded","message":"too many open connections; retry shortly"}}'
)
OVERLOADED_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
    b"retry-after: 1\r\nconnection: close\r\ncontent-length: %d\r\n\r\n%s"
    % (len(_OVERLOADED_BODY), _OVERLOADED_BODY)
)


# asyncio accepts up to `backlog` connections per wake-up before any of them reaches the guard;
# uvicorn's 2,048 let one burst run a 1,024-descriptor server out of them (measured: one EMFILE,
# after which asyncio stops accepting for a whole second). 128 bounds the overshoot.
ACCEPT_BACKLOG = 128
REFUSED_LINGER_S = 0.5


def default_max_connections() -> int:
    """Half the open-file limit: the other half holds one accept burst past the cap and the
    connections it evicts (2 x ACCEPT_BACKLOG), models, the database, uploads and URL fetches."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 65_536
    return max(16, soft // 2)


def waiting_for_headers(connection: asyncio.Protocol) -> bool:
    """True between requests: before the first, or after a response (uvicorn's h11 and
    httptools protocols both keep the current request in `cycle`)."""
    cycle: Any = getattr(connection, "cycle", None)
    return cycle is None or bool(cycle.response_complete)


@dataclass
class _Watch:
    transport: asyncio.BaseTransport
    cycle: object = None
    waiting_since: float | None = None


class ConnectionGuard:
    """The open connections of one server, their header deadlines and the cap."""

    def __init__(self, max_connections: int, header_timeout_s: float) -> None:
        self.max_connections = max_connections
        self.header_timeout_s = header_timeout_s
        self.sweep_every_s = min(1.0, header_timeout_s / 4)
        self.open: dict[asyncio.Protocol, _Watch] = {}
        self._sweeping = False
        self._lingering = 0

    def admit(self, connection: asyncio.Protocol, transport: asyncio.BaseTransport) -> bool:
        """False when the connection was refused (answered 503 and closing)."""
        if len(self.open) >= self.max_connections and not self._evict_idlest():
            self._refuse(cast(asyncio.Transport, transport))
            return False
        self.open[connection] = _Watch(transport, None, time.monotonic())
        if not self._sweeping:
            self._sweeping = True
            asyncio.get_running_loop().call_later(self.sweep_every_s, self._tick)
        return True

    def forget(self, connection: asyncio.Protocol) -> None:
        self.open.pop(connection, None)

    def sweep(self, now: float) -> None:
        """Close every connection past its header deadline."""
        for connection, watch in list(self.open.items()):
            if self._update(connection, watch, now) > self.header_timeout_s:
                self.forget(connection)
                watch.transport.close()

    def _update(self, connection: asyncio.Protocol, watch: _Watch, now: float) -> float:
        """Seconds this connection has been waiting for headers (0 while serving a request)."""
        cycle = getattr(connection, "cycle", None)
        if not waiting_for_headers(connection):
            watch.waiting_since = None
        elif watch.waiting_since is None or watch.cycle is not cycle:
            watch.waiting_since = now
        watch.cycle = cycle
        return 0.0 if watch.waiting_since is None else now - watch.waiting_since

    def _evict_idlest(self) -> bool:
        now = time.monotonic()
        waits = {c: self._update(c, w, now) for c, w in self.open.items() if waiting_for_headers(c)}
        if not waits:
            return False
        idlest = max(waits, key=waits.__getitem__)
        self.open.pop(idlest).transport.close()
        return True

    def _tick(self) -> None:
        self.sweep(time.monotonic())
        self._sweeping = bool(self.open)
        if self._sweeping:
            asyncio.get_running_loop().call_later(self.sweep_every_s, self._tick)

    def _refuse(self, transport: asyncio.Transport) -> None:
        """503, then a moment before closing: closing a socket with the request still unread
        sends a reset, and a client that gets a reset may never read the 503. Lingering
        connections are bounded too, or a flood would hold descriptors that way."""
        log.warning("connection refused: open-connection cap reached and every one is busy")
        transport.write(OVERLOADED_RESPONSE)
        if self._lingering >= ACCEPT_BACKLOG or not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        self._lingering += 1
        asyncio.get_running_loop().call_later(REFUSED_LINGER_S, self._close_refused, transport)

    def _close_refused(self, transport: asyncio.Transport) -> None:
        self._lingering -= 1
        transport.close()


class GuardedConnection(asyncio.Protocol):
    """Mixed in before uvicorn's HTTP protocol: tells the guard of each connection's life."""

    guard: ClassVar[ConnectionGuard]

    refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.refused = not self.guard.admit(self, transport)

    def data_received(self, data: bytes) -> None:
        if not self.refused:  # a refused connection's request is read and dropped
            super().data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.forget(self)
        super().connection_lost(exc)


def guarded_protocol(guard: ConnectionGuard) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol (httptools when installed, else h11) under `guard`."""
    bases = (GuardedConnection, AutoHTTPProtocol)
    return cast(type[asyncio.Protocol], type("GuardedHTTPProtocol", bases, {"guard": guard}))


class RepeatFilter(logging.Filter):
    """Lets one record per logger and message through every `window_s`; the next one through
    says how many were left out. Bounds the log when the same error repeats in a tight loop."""

    def __init__(self, window_s: float = 10.0) -> None:
        super().__init__()
        self.window_s = window_s
        self._last: dict[tuple[str, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        now = time.monotonic()
        shown_at, left_out = self._last.get(key, (float("-inf"), 0))
        if now - shown_at < self.window_s:
            self._last[key] = (shown_at, left_out + 1)
            return False
        self._last[key] = (now, 0)
        if left_out:
            record.msg = f"{record.msg} ({left_out} more like this in the last {self.window_s:g}s)"
        return True


def quiet_repeated_errors(window_s: float = 10.0) -> None:
    for name in ("asyncio", "uvicorn.error", __name__):
        logging.getLogger(name).addFilter(RepeatFilter(window_s))
