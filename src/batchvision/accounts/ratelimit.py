"""Per-key token buckets for requests and images per minute (per server process)."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    capacity: float
    tokens: float
    updated: float

    def refill(self, now: float) -> None:
        rate = self.capacity / 60.0
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * rate)
        self.updated = now

    def seconds_until(self, tokens: float) -> float:
        missing = max(0.0, tokens - self.tokens)
        return missing / (self.capacity / 60.0)


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


class RateLimiter:
    """Buckets start full; a refused take costs nothing."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[tuple[int, str], _Bucket] = {}
        self._lock = threading.Lock()

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
            # A take larger than the whole bucket can never succeed (the accounts service refuses
            # it as exceeds_rate_limit before asking); if asked anyway, say a minute, not never.
            wait = bucket.seconds_until(min(amount, bucket.capacity)) if not allowed else 0.0
            return RateDecision(
                allowed=allowed,
                limit=per_minute,
                remaining=math.floor(bucket.tokens),
                reset_s=math.ceil(bucket.seconds_until(bucket.capacity)),
                retry_after_s=max(1, math.ceil(wait)) if not allowed else 0,
            )
