"""HTTP to one backend: bounded calls in flight, retries with backoff, and a circuit breaker.

- At most `concurrency` calls in flight (a slot is held per attempt, not during backoff).
- Transient failures (connection errors, timeouts, 408, 429, 5xx) are retried with exponential
  backoff and jitter, honouring `Retry-After`, up to `attempts` tries; then the call fails
  `processing_error` naming the last failure. Other statuses fail at once.
- `breaker_failures` consecutive failed attempts (429 excluded: a busy server is alive) open the
  breaker: calls then fail fast (`model_unavailable`) instead of waiting out timeouts, until
  `cooldown_s` has passed; then one probe call goes through, and its outcome closes or reopens it.
- Streams retry only before their first event: a stream cut later fails, never repeats chunks.

The httpx client and the slots belong to one event loop; a call from another loop (a script's
`asyncio.run`) gets its own.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from batchvision.core import metrics
from batchvision.core.errors import BatchVisionError, ErrorCode

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER_S = 30.0
MAX_BACKOFF_S = 8.0
SHOWN_CHARS = 200


@dataclass(frozen=True)
class CallPolicy:
    concurrency: int = 4
    timeout_s: float = 60.0
    attempts: int = 4
    retry_base_s: float = 0.25
    breaker_failures: int = 5
    cooldown_s: float = 10.0


class Transient(Exception):
    """One attempt failed in a way worth retrying."""

    def __init__(self, reason: str, retry_after_s: float | None = None, counts: bool = True):
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s
        self.counts = counts  # against the breaker


@dataclass
class CircuitBreaker:
    threshold: int
    cooldown_s: float
    clock: Callable[[], float] = time.monotonic
    failures: int = 0
    opened_at: float | None = None
    probing: bool = False
    last_failure: str = ""

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half_open" if self.clock() - self.opened_at >= self.cooldown_s else "open"

    def allow(self) -> bool:
        """Whether a call may go out now (in half-open, only the one probe)."""
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self.probing:
            self.probing = True
            return True
        return False

    def succeeded(self) -> None:
        self.failures, self.opened_at, self.probing = 0, None, False

    def failed(self, reason: str) -> None:
        self.last_failure = reason
        self.failures += 1
        if self.probing or self.failures >= self.threshold:
            self.opened_at, self.probing = self.clock(), False

    def released(self) -> None:
        """A probe that ended without a verdict (a refused request) frees the probe slot."""
        self.probing = False

    def retry_in_s(self) -> float:
        if self.opened_at is None:
            return 0.0
        return max(0.0, self.cooldown_s - (self.clock() - self.opened_at))


@dataclass
class _LoopState:
    client: httpx.AsyncClient
    slots: asyncio.Semaphore


@dataclass
class Counters:
    calls: int = 0
    attempts: int = 0
    retries: int = 0
    failures: int = 0


@dataclass
class Transport:
    name: str
    base_url: str
    headers: dict[str, str]
    policy: CallPolicy
    counters: Counters = field(default_factory=Counters)

    def __post_init__(self) -> None:
        self.breaker = CircuitBreaker(self.policy.breaker_failures, self.policy.cooldown_s)
        self._states: dict[asyncio.AbstractEventLoop, _LoopState] = {}

    def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        state = self._states.get(loop)
        if state is None:
            for old in [old for old in self._states if old.is_closed()]:
                del self._states[old]  # their clients' sockets went with their loops
            limits = httpx.Limits(max_connections=self.policy.concurrency * 2)
            client = httpx.AsyncClient(
                base_url=self.base_url.rstrip("/") + "/",
                headers=self.headers,
                timeout=httpx.Timeout(self.policy.timeout_s),
                limits=limits,
            )
            state = self._states[loop] = _LoopState(
                client, asyncio.Semaphore(self.policy.concurrency)
            )
        return state

    async def post_json(self, path: str, body: dict[str, Any]) -> Any:
        """The JSON answer of `POST path`, retried as the policy says."""
        self.counters.calls += 1
        metrics.VLM_CALLS.labels(backend=self.name).inc()
        for attempt in range(1, self.policy.attempts + 1):
            try:
                return await self._attempt(path, body)
            except Transient as exc:
                await self._after_failure(exc, attempt)
        raise AssertionError("unreachable: the last attempt raises")  # pragma: no cover

    async def _attempt(self, path: str, body: dict[str, Any]) -> Any:
        state = self._state()
        async with state.slots:
            self._enter()
            try:
                timed = metrics.VLM_SECONDS.labels(backend=self.name).time()
                async with asyncio.timeout(self.policy.timeout_s):
                    with timed:
                        response = await state.client.post(path, json=body)
                self._check(response)
                payload = response.json()
            except Transient:
                raise
            except httpx.HTTPError as exc:
                raise Transient(_describe(exc)) from None
            except TimeoutError:
                raise Transient(f"no answer within {self.policy.timeout_s:g} s") from None
            except ValueError:
                self.breaker.succeeded()  # the server answered: alive, but wrong
                raise self._bad_answer(response.text, "the answer is not JSON") from None
            except BaseException:
                self.breaker.released()
                raise
            self.breaker.succeeded()
            return payload

    def _enter(self) -> None:
        if not self.breaker.allow():
            metrics.VLM_ERRORS.labels(backend=self.name, reason="circuit_open").inc()
            breaker = self.breaker
            raise BatchVisionError(
                ErrorCode.MODEL_UNAVAILABLE,
                f"vision-language backend '{self.name}' is unavailable: circuit open after "
                f"{breaker.failures} consecutive failures (last: {breaker.last_failure}); "
                f"next try in {breaker.retry_in_s():.1f} s",
            )
        self.counters.attempts += 1

    def _check(self, response: httpx.Response) -> None:
        if response.status_code < 400:
            return
        status = response.status_code
        reason = f"HTTP {status} from {response.request.url.path}"
        if status in RETRY_STATUSES:
            retry_after = _retry_after_s(response.headers.get("retry-after"))
            raise Transient(reason, retry_after, counts=status != 429)
        self.breaker.succeeded()
        raise self._bad_answer(response.text, reason)

    def _bad_answer(self, text: str, reason: str) -> BatchVisionError:
        metrics.VLM_ERRORS.labels(backend=self.name, reason="bad_answer").inc()
        return BatchVisionError(
            ErrorCode.PROCESSING_ERROR,
            f"vision-language backend '{self.name}': {reason}: {text[:SHOWN_CHARS]!r}",
        )

    async def _after_failure(self, exc: Transient, attempt: int) -> None:
        if exc.counts:
            self.breaker.failed(exc.reason)
        else:
            self.breaker.released()
        if attempt >= self.policy.attempts:
            self.counters.failures += 1
            metrics.VLM_ERRORS.labels(backend=self.name, reason="retries_exhausted").inc()
            raise BatchVisionError(
                ErrorCode.PROCESSING_ERROR,
                f"vision-language backend '{self.name}' failed after {attempt} attempts: "
                f"{exc.reason}",
            )
        self.counters.retries += 1
        metrics.VLM_RETRIES.labels(backend=self.name).inc()
        await asyncio.sleep(self._delay_s(attempt, exc.retry_after_s))

    def _delay_s(self, attempt: int, retry_after_s: float | None) -> float:
        backoff = min(MAX_BACKOFF_S, self.policy.retry_base_s * 2.0 ** (attempt - 1))
        jittered = backoff * (0.5 + random.random() / 2)  # noqa: S311 - jitter, not secrecy
        honoured: float = min(retry_after_s or 0.0, MAX_RETRY_AFTER_S)
        return max(jittered, honoured)

    async def stream_events(self, path: str, body: dict[str, Any]) -> AsyncIterator[str]:
        """The `data:` payloads of a server-sent-event answer, as they arrive."""
        self.counters.calls += 1
        metrics.VLM_CALLS.labels(backend=self.name).inc()
        for attempt in range(1, self.policy.attempts + 1):
            started = False
            try:
                async for data in self._stream_attempt(path, body):
                    started = True
                    yield data
                return
            except Transient as exc:
                if started:
                    metrics.VLM_ERRORS.labels(backend=self.name, reason="stream_broken").inc()
                    raise BatchVisionError(
                        ErrorCode.PROCESSING_ERROR,
                        f"vision-language backend '{self.name}': the stream broke: {exc.reason}",
                    ) from None
                await self._after_failure(exc, attempt)

    async def _stream_attempt(self, path: str, body: dict[str, Any]) -> AsyncIterator[str]:
        state = self._state()
        async with state.slots:
            self._enter()
            try:
                async with state.client.stream("POST", path, json=body) as response:
                    if response.status_code >= 400:
                        await response.aread()
                        self._check(response)
                    self.breaker.succeeded()
                    async for line in response.aiter_lines():
                        if line.startswith("data:"):
                            yield line[5:].strip()
            except Transient:
                raise
            except httpx.HTTPError as exc:
                raise Transient(_describe(exc)) from None
            except BaseException:
                self.breaker.released()
                raise

    async def probe(self) -> dict[str, Any]:
        """Reachability and latency of the server (any HTTP answer below 500 counts)."""
        start = time.perf_counter()
        try:
            response = await self._state().client.get("", timeout=min(5.0, self.policy.timeout_s))
        except httpx.HTTPError as exc:
            return {"reachable": False, "error": _describe(exc), "breaker": self.breaker.state}
        latency = round((time.perf_counter() - start) * 1000.0, 1)
        reachable = response.status_code < 500
        return {"reachable": reachable, "latency_ms": latency, "breaker": self.breaker.state}

    async def close(self) -> None:
        for state in self._states.values():
            await state.client.aclose()
        self._states.clear()


def _describe(exc: httpx.HTTPError) -> str:
    kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "connection failed"
    detail = str(exc) or type(exc).__name__
    return f"{kind}: {detail[:SHOWN_CHARS]}"


def _retry_after_s(value: str | None) -> float | None:
    """`Retry-After` in seconds or as an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
