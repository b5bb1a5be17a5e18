"""Per-key token buckets for requests and images per minute.

`RateLimiter` keeps them in the server process (the embedded default: one process). With
replicas behind a load balancer each would grant the whole limit, so `RedisRateLimiter` keeps
one bucket per key and kind in Redis instead, taken from atomically by a Lua script that reads
Redis's own clock (replicas' clocks need not agree). A call is one round trip with a short
timeout; while Redis cannot be reached, takes fall back to the process's own buckets (each
replica then enforces the limit alone, rather than none or every request failing) and a
warning is logged, at most once a minute.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from batchvision.core.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class _Bucket:
    capacity: float
    tokens: float
    updated: float

    def refill(self, now: float) -> None:
        rate = self.capacity / 60.0
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * rate)
        self.updated = now


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    limit: int
    remaining: int
    reset_s: int  # seconds until the bucket is full again
    retry_after_s: int  # seconds until the request would be allowed (0 when allowed)

    def headers(self) -> dict[str, str]:
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_s),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after_s)
        return headers


class RateLimits(Protocol):
    def take(self, key_id: int, kind: str, per_minute: int, amount: int = 1) -> RateDecision: ...

    def close(self) -> None: ...


def decision(per_minute: int, tokens: float, amount: int, allowed: bool) -> RateDecision:
    """What a take left behind: `tokens` in the bucket after it."""
    rate = per_minute / 60.0
    # A take larger than the whole bucket can never succeed (the accounts service refuses it
    # as exceeds_rate_limit before asking); if asked anyway, say a minute, not never.
    wait = max(0.0, min(amount, per_minute) - tokens) / rate if not allowed else 0.0
    return RateDecision(
        allowed=allowed,
        limit=per_minute,
        remaining=math.floor(tokens),
        reset_s=math.ceil(max(0.0, per_minute - tokens) / rate),
        retry_after_s=max(1, math.ceil(wait)) if not allowed else 0,
    )


class RateLimiter:
    """Buckets start full; a refused take costs nothing."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[tuple[int, str], _Bucket] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        """Nothing to release: the buckets go with the process."""

    def take(self, key_id: int, kind: str, per_minute: int, amount: int = 1) -> RateDecision:
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get((key_id, kind))
            if bucket is None or bucket.capacity != per_minute:
                bucket = _Bucket(float(per_minute), float(per_minute), now)
                self._buckets[(key_id, kind)] = bucket
            bucket.refill(now)
            allowed = amount <= bucket.tokens
            if allowed:
                bucket.tokens -= amount
            return decision(per_minute, bucket.tokens, amount, allowed)


# KEYS[1]: the bucket; ARGV: its capacity per minute, the amount to take. Returns {allowed,
# tokens left as text} (a Lua number in a reply is cut to an integer). The bucket starts full,
# a refused take costs nothing, a capacity change starts it full again, and an idle bucket
# expires once it would be full anyway.
_BUCKET_SCRIPT = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1000000
local capacity = tonumber(ARGV[1])
local amount = tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'updated', 'capacity')
local tokens, updated = tonumber(state[1]), tonumber(state[2])
if tokens == nil or tonumber(state[3]) ~= capacity then
  tokens, updated = capacity, now
end
tokens = math.min(capacity, tokens + math.max(0, now - updated) * capacity / 60)
local allowed = 0
if amount <= tokens then
  tokens = tokens - amount
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'updated', tostring(now),
           'capacity', tostring(capacity))
redis.call('EXPIRE', KEYS[1], 61)
return {allowed, tostring(tokens)}
"""

_WARN_EVERY_S = 60.0


class RedisRateLimiter:
    """One bucket per key and kind in Redis, shared by every replica (see the module
    docstring)."""

    def __init__(
        self, url: str, *, prefix: str = "batchvision:rate:", timeout_s: float = 0.25
    ) -> None:
        import redis

        self._errors: tuple[type[Exception], ...] = (redis.RedisError, OSError)
        self._client = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self._script: Any = self._client.register_script(_BUCKET_SCRIPT)
        self._prefix = prefix
        self._fallback = RateLimiter()
        self._warned_at = -math.inf

    def take(self, key_id: int, kind: str, per_minute: int, amount: int = 1) -> RateDecision:
        try:
            allowed, tokens = self._script(
                keys=[f"{self._prefix}{key_id}:{kind}"], args=[per_minute, amount]
            )
        except self._errors as exc:
            self._warn(exc)
            return self._fallback.take(key_id, kind, per_minute, amount)
        return decision(per_minute, float(tokens), amount, bool(allowed))

    def _warn(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY_S:
            self._warned_at = now
            log.warning("rate-limit store unreachable (%s); limiting per process meanwhile", exc)

    def close(self) -> None:
        self._client.close()


def make_limiter(settings: Settings) -> RateLimits:
    """The store `rate_limit_store` names; a missing client library fails here, at start-up."""
    if settings.rate_limit_store == "memory":
        return RateLimiter()
    try:
        import redis  # noqa: F401
    except ImportError:
        raise RuntimeError(
            "BATCHVISION_RATE_LIMIT_STORE=redis needs the Redis client: "
            "pip install 'batchvision[redis]'"
        ) from None
    assert settings.broker_url is not None  # Settings requires it with the redis store
    return RedisRateLimiter(settings.broker_url)
