"""The one accounts entry point every API surface uses: authenticate, rate-limit, meter credits.

A request is authorized once, when it arrives: one already in flight when its key is revoked
finishes and is billed (its credits were reserved before the revoke, and a request lasts seconds).
Jobs, which last hours, read the key again before each chunk (see `work/runner.py`)."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

from sqlalchemy import Engine

from batchvision.accounts.keys import KeyStore, Usage
from batchvision.accounts.ratelimit import make_limiter
from batchvision.accounts.scoping import Principal
from batchvision.accounts.tables import utcnow
from batchvision.core import metrics
from batchvision.core.errors import BatchVisionError, ErrorCode
from batchvision.core.periodic import every
from batchvision.core.settings import Settings

P = ParamSpec("P")
R = TypeVar("R")

log = logging.getLogger(__name__)


def unauthorized(message: str) -> BatchVisionError:
    return BatchVisionError(
        ErrorCode.UNAUTHORIZED, message, headers={"WWW-Authenticate": 'Bearer realm="batchvision"'}
    )


@dataclass
class Meter:
    """Credits reserved for one request; items that fail before inference are handed back,
    and so are vision-language calls that did not answer (`refund_credits`).
    `credits_per_image` is what one image costs, its vision-language calls included."""

    credits_per_image: int
    images: int
    reserved: int
    refunded_images: int = 0
    refunded_extra: int = 0  # credits handed back beside whole images

    def refund_images(self, count: int) -> None:
        self.refunded_images = min(self.images, self.refunded_images + max(0, count))

    def refund_credits(self, credits: int) -> None:
        self.refunded_extra += max(0, credits)

    @property
    def refunded_credits(self) -> int:
        whole = self.refunded_images * self.credits_per_image
        return min(self.reserved, whole + self.refunded_extra)

    @property
    def processed_images(self) -> int:
        return self.images - self.refunded_images


class Accounts:
    def __init__(self, settings: Settings, engine: Engine) -> None:
        """`engine`: the shared, migrated database (the app's `open_database`)."""
        self.settings = settings
        self.required = settings.auth == "required"
        self.engine = engine
        self.keys = KeyStore(self.engine)
        self.limiter = make_limiter(settings)
        # Database calls are short and blocking; a few dedicated threads keep them off the loop
        # and out of the image workers' way.
        self._pool = ThreadPoolExecutor(4, thread_name_prefix="bv-db")
        self._sweeper: asyncio.Task[None] | None = None

    async def run(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run a blocking store call on the accounts threads."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    async def authenticate(self, secret: str | None, missing: str = "missing API key") -> Principal:
        """`missing`: the message when no key was sent (a surface may say how to send one)."""
        if not self.required:
            return Principal.anonymous()
        if not secret:
            raise unauthorized(missing)
        key = await self.run(self.keys.authenticate, secret)
        if key is None:
            raise unauthorized("invalid or revoked API key")
        return Principal.of(key)

    async def authenticate_key(self, key_id: int) -> Principal:
        """The caller an access token names (its signature already checked): the key must
        still be active, so a revoked key's tokens die with it."""
        if not self.required:
            return Principal.anonymous()
        key = await self.run(self.keys.get, key_id)
        if key is None or not key.active:
            raise unauthorized("invalid or revoked API key")
        return Principal.of(key)

    async def authenticate_client(self, client_id: str, client_secret: str) -> Principal | None:
        """The key these OAuth client credentials belong to (None: unknown, wrong or revoked);
        with auth disabled, the one implicit tenant."""
        if not self.required:
            return Principal.anonymous()
        key = await self.run(self.keys.authenticate_client, client_id, client_secret)
        return Principal.of(key) if key is not None else None

    def limit_requests(self, principal: Principal) -> dict[str, str]:
        """Take one request token; the headers to send, or a rate_limited error carrying them."""
        return self._take(principal, "requests", principal.requests_per_minute, 1)

    def limit_images(self, principal: Principal, images: int) -> dict[str, str]:
        return self._take(principal, "images", principal.images_per_minute, images)

    def _take(
        self, principal: Principal, kind: str, per_minute: int | None, amount: int
    ) -> dict[str, str]:
        if principal.key_id is None or per_minute is None:
            return {}
        if amount > per_minute:
            # Never allowed, however long the client waits: a 429 with Retry-After would
            # invite retries forever. Checked first, so it takes no tokens.
            metrics.RATE_LIMIT_REFUSALS.labels(kind=kind, reason="exceeds_limit").inc()
            raise BatchVisionError(
                ErrorCode.EXCEEDS_RATE_LIMIT,
                f"this request needs {amount} {kind} but the key's limit is {per_minute} "
                f"{kind} per minute; send at most {per_minute} per request",
            )
        decision = self.limiter.take(principal.key_id, kind, per_minute, amount)
        if not decision.allowed:
            metrics.RATE_LIMIT_REFUSALS.labels(kind=kind, reason="rate_limited").inc()
            raise BatchVisionError(
                ErrorCode.RATE_LIMITED,
                f"rate limit of {per_minute} {kind} per minute exceeded; retry in "
                f"{decision.retry_after_s} s",
                headers=decision.headers(),
            )
        return decision.headers() if kind == "requests" else {}

    @asynccontextmanager
    async def metered(
        self,
        principal: Principal,
        *,
        request_id: str = "-",
        images: int = 0,
        videos: int = 0,
        vlm_calls_per_image: int = 0,
        vlm_calls: int = 0,
        extra_credits: int = 0,
    ) -> AsyncIterator[Meter]:
        """Reserve the request's credits durably before work starts (402 if short); on exit
        hand back what `Meter.refund_images` marked and record usage, in the transaction that
        ends the reservation. A failed request is fully refunded; one the process died in is
        refunded at the next start-up (`settle_abandoned`). An image costs `credits_per_image`
        plus `credits_per_vlm_call` for each vision-language call made on it (`vlm_calls`: calls
        counted for the request as a whole, when its images ask for different work); a video
        costs `credits_per_video`; `extra_credits` is reserved beside them (the most that the
        vision-language calls on a request's video frames can cost)."""
        settings = self.settings
        per_call = settings.credits_per_vlm_call
        per_image = settings.credits_per_image + vlm_calls_per_image * per_call
        cost = images * per_image + videos * settings.credits_per_video + vlm_calls * per_call
        cost += extra_credits
        meter = Meter(per_image, images + videos, cost)
        if principal.key_id is None:
            yield meter
            return
        reservation = await self.run(self.keys.reserve, principal.key_id, cost, request_id)
        if reservation is None:
            raise BatchVisionError(
                ErrorCode.INSUFFICIENT_CREDITS,
                f"insufficient credits: this request needs {cost}",
            )
        try:
            yield meter
        except BaseException:
            await asyncio.shield(self.run(self.keys.settle, reservation, refund=cost, usage=None))
            raise
        charged = Usage(1, meter.processed_images, cost - meter.refunded_credits)
        refund = meter.refunded_credits
        await asyncio.shield(self.run(self.keys.settle, reservation, refund=refund, usage=charged))

    async def start(self) -> None:
        """Refund the reservations of requests that died with an earlier process, now and, when
        a grace period is set (replicas sharing the database), every grace period after."""
        await self.run(self.settle_abandoned)
        grace = self.settings.credit_reservation_grace_s
        if grace > 0:
            self._sweeper = asyncio.create_task(
                every(grace, self.settle_abandoned, "settling abandoned credit reservations")
            )

    def settle_abandoned(self) -> None:
        made_before = utcnow() - dt.timedelta(seconds=self.settings.credit_reservation_grace_s)
        for request_id, credits in self.keys.settle_abandoned(made_before):
            log.warning("refunded %d credits held by unfinished request %s", credits, request_id)

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        self._pool.shutdown(wait=True)
        self.limiter.close()
