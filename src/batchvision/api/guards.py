"""Request body deadlines: a client that sends its body too slowly is answered 408 and cut off.

A body that never finishes holds a connection, a file descriptor and a request task for as long
as the client likes; enough of them and the server answers nobody. So every wait for the next
piece of a body is bounded (`body_timeout_s`), and once that much waiting has passed the body
must have arrived at `min_body_rate_bytes_s` on average. Only time spent waiting for the client
counts: a route that reads slowly because it is busy (writing an upload to disk) is not the
client's fault.

Past a deadline the guard answers 408 `timeout` itself, in the language of the surface that owns
the path, with `Connection: close` so the server drops the connection, and tells the route the
client is gone; whatever the route then sends is discarded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from batchvision.api.errors import render
from batchvision.api.surface import WireError
from batchvision.core.errors import ErrorCode

log = logging.getLogger(__name__)

_DISCONNECT: Message = {"type": "http.disconnect"}


@dataclass
class BodyClock:
    """How long the next wait for body bytes may last, from what the client delivered so far."""

    idle_timeout_s: float
    min_rate_bytes_s: float
    received: int = 0
    waited_s: float = 0.0
    complete: bool = False

    def next_wait_s(self) -> float:
        allowed_by_rate = self.idle_timeout_s + self.received / self.min_rate_bytes_s
        return min(self.idle_timeout_s, allowed_by_rate - self.waited_s)

    def record(self, message: Message, waited_s: float) -> None:
        self.waited_s += waited_s
        if message["type"] != "http.request" or not message.get("more_body", False):
            self.complete = True
        self.received += len(message.get("body", b""))


class BodyDeadlineGuard:
    """ASGI middleware enforcing `BodyClock` on every HTTP request's body."""

    def __init__(self, app: ASGIApp, idle_timeout_s: float, min_rate_bytes_s: float) -> None:
        self.app = app
        self.idle_timeout_s = idle_timeout_s
        self.min_rate_bytes_s = min_rate_bytes_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = _GuardedRequest(scope, receive, send, self._clock())
        try:
            await self.app(scope, request.receive, request.send)
        except Exception:
            # The route saw a disconnect we made up; the client already has its 408.
            if not request.timed_out:
                raise
            log.debug("route ended after a body timeout on %s", scope["path"])

    def _clock(self) -> BodyClock:
        return BodyClock(self.idle_timeout_s, self.min_rate_bytes_s)


class _GuardedRequest:
    """One request's receive and send, as the guard hands them to the app."""

    def __init__(self, scope: Scope, receive: Receive, send: Send, clock: BodyClock) -> None:
        self.scope, self._receive, self._send, self.clock = scope, receive, send, clock
        self.timed_out = False
        self.started = False

    async def receive(self) -> Message:
        if self.clock.complete or self.timed_out:
            return await self._receive()
        began = time.monotonic()
        try:
            # A timeout scope, not wait_for: no extra task per body chunk of a large upload.
            async with asyncio.timeout(max(0.0, self.clock.next_wait_s())):
                message = await self._receive()
        except TimeoutError:
            await self._time_out()
            return _DISCONNECT
        self.clock.record(message, time.monotonic() - began)
        return message

    async def send(self, message: Message) -> None:
        if self.timed_out:
            return
        self.started = self.started or message["type"] == "http.response.start"
        await self._send(message)

    async def _time_out(self) -> None:
        log.info("request body too slow on %s: closing", self.scope["path"])
        if not self.started:
            surfaces = self.scope["app"].state.surfaces
            response = render(surfaces, self.scope["path"], self._error())
            await response(self.scope, self._receive, self._send)
        self.timed_out = True

    def _error(self) -> WireError:
        clock = self.clock
        message = (
            f"request body too slow: {clock.received} bytes in {clock.waited_s:.1f}s; send each "
            f"piece within {clock.idle_timeout_s:g}s and at least "
            f"{clock.min_rate_bytes_s:g} bytes/s"
        )
        return WireError(408, ErrorCode.TIMEOUT, message, {"connection": "close"})
