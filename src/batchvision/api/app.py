"""The ASGI application: one factory, settings passed in, surfaces mounted as routers."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from batchvision import __version__
from batchvision.accounts.service import Accounts
from batchvision.api.compat.animaldetect import router as animaldetect
from batchvision.api.compat.animaldetect.store import DetectResultStore
from batchvision.api.compat.moondream import router as moondream
from batchvision.api.compat.yandex import router as yandex
from batchvision.api.errors import error_response, install_error_handlers
from batchvision.api.native import analyze, jobs, keys
from batchvision.core.errors import ErrorCode
from batchvision.core.settings import Settings
from batchvision.pipeline import Pipeline
from batchvision.work.service import JobService

log = logging.getLogger(__name__)
access_log = logging.getLogger("batchvision.access")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestContextMiddleware:
    """Gives every response an X-Request-ID (echoing a well-formed client one) plus any headers
    a route left in `request.state.response_headers` (rate limits), and logs one access line
    per request: method, route, status, key prefix, images, milliseconds. Never the secret."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = self._request_id(scope)
        state = scope.setdefault("state", {})
        state.update(request_id=request_id, response_headers={}, images=0, principal=None)
        start = time.perf_counter()
        status = 500
        started = False

        async def send_with_context(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
                headers = message.setdefault("headers", [])
                headers.append((b"x-request-id", request_id.encode()))
                existing = {name.lower() for name, _ in headers}
                for name, value in state["response_headers"].items():
                    if name.lower().encode() not in existing:
                        headers.append((name.lower().encode(), value.encode("latin-1")))
            await send(message)

        try:
            await self.app(scope, receive, send_with_context)
        except Exception as exc:
            # Starlette answers unhandled errors in its outermost middleware, outside this one,
            # so that 500 would lack the request id; answer here instead, with the same generic
            # body (the id is what lets an operator find the logged traceback).
            if started:
                raise
            log.error(
                "internal error on %s %s id=%s",
                scope["method"],
                scope["path"],
                request_id,
                exc_info=exc,
            )
            response = error_response(500, ErrorCode.INTERNAL_ERROR, "internal server error")
            await response(scope, receive, send_with_context)
        finally:
            self._log(scope, state, status, (time.perf_counter() - start) * 1000.0)

    @staticmethod
    def _log(scope: Scope, state: dict[str, Any], status: int, took_ms: float) -> None:
        principal = state.get("principal")
        key = getattr(principal, "prefix", None) or "-"
        access_log.info(
            "%s %s %d key=%s images=%d %.1fms id=%s",
            scope["method"],
            scope["path"],
            status,
            key,
            state.get("images", 0),
            took_ms,
            state["request_id"],
        )

    @staticmethod
    def _request_id(scope: Scope) -> str:
        for name, value in scope.get("headers", []):
            if name == b"x-request-id":
                text: str = value.decode("latin-1")
                if _REQUEST_ID.match(text):
                    return text
        return str(uuid.uuid4().hex)


async def _purge_forever(results: DetectResultStore, interval_s: float) -> None:
    """Stored AnimalDetect responses past their expiry go even when no new request comes."""
    while True:
        try:
            await asyncio.to_thread(results.purge_expired)
        except Exception:
            log.exception("purging expired detect results failed; trying again later")
        await asyncio.sleep(interval_s)


def create_app(
    settings: Settings, pipeline: Pipeline | None = None, accounts: Accounts | None = None
) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.accounts = accounts or Accounts(settings)
        app.state.pipeline = pipeline or Pipeline(settings)
        app.state.jobs = JobService(settings, app.state.accounts.engine, app.state.pipeline)
        await app.state.jobs.start()
        results = DetectResultStore(app.state.accounts.engine)
        sweep = asyncio.create_task(_purge_forever(results, settings.job_sweep_interval_s))
        try:
            yield
        finally:
            sweep.cancel()
            await asyncio.gather(sweep, return_exceptions=True)
            await app.state.jobs.close()
            await app.state.pipeline.close()
            await app.state.accounts.close()

    app = FastAPI(
        title="batchvision",
        version=__version__,
        description="Self-hosted batch vision inference server",
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.include_router(analyze.router)
    app.include_router(keys.router)
    app.include_router(yandex.router)
    app.include_router(jobs.router)
    app.include_router(moondream.router)
    app.include_router(animaldetect.router)
    app.add_middleware(RequestContextMiddleware)
    return app
