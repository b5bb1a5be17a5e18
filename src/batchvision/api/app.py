"""The ASGI application: one factory, settings passed in, every surface listed once in
`SURFACES` (adding a surface is a folder under `api/compat/` and one line here)."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from batchvision import __version__
from batchvision.accounts.service import Accounts
from batchvision.api.compat.animaldetect.surface import animaldetect_surface
from batchvision.api.compat.bitmind.surface import bitmind_surface
from batchvision.api.compat.moondream.surface import moondream_surface
from batchvision.api.compat.raku.surface import raku_surface
from batchvision.api.compat.yandex.surface import yandex_surface
from batchvision.api.docs import install_docs
from batchvision.api.errors import INTERNAL, install_error_handlers, render, unexpected
from batchvision.api.guards import BodyDeadlineGuard
from batchvision.api.native.metrics import record_request
from batchvision.api.native.surface import native_surface
from batchvision.api.surface import Services, Surface
from batchvision.core.db import open_database
from batchvision.core.periodic import every
from batchvision.core.settings import Settings
from batchvision.intake.video import spool_directory, sweep_spool
from batchvision.pipeline import Pipeline
from batchvision.work.service import JobService
from batchvision.work.surface import JobSurface

log = logging.getLogger(__name__)
access_log = logging.getLogger("batchvision.access")

SPOOL_SWEEP_INTERVAL_S = 3600.0
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestContextMiddleware:
    """Gives every response an X-Request-ID (echoing a well-formed client one) plus any headers
    a route left in `request.state.response_headers` (rate limits), logs one access line
    per request: method, route, status, key prefix, images, milliseconds (never the secret),
    and counts it for /metrics."""

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
            error = unexpected(exc)
            log.error(
                "%s on %s %s id=%s",
                "internal error" if error is INTERNAL else "storage full",
                scope["method"],
                scope["path"],
                request_id,
                exc_info=exc,
            )
            surfaces = scope["app"].state.surfaces
            response = render(surfaces, scope["path"], error)
            await response(scope, receive, send_with_context)
        finally:
            took_s = time.perf_counter() - start
            self._log(scope, state, status, took_s * 1000.0)
            record_request(scope, status, took_s)

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


SURFACES: tuple[Callable[[], Surface], ...] = (
    native_surface,
    yandex_surface,
    moondream_surface,
    animaldetect_surface,
    raku_surface,
    bitmind_surface,
)


def job_surfaces(surfaces: list[Surface] | None = None) -> dict[str, JobSurface]:
    """The job hooks of every surface that takes jobs, by name (a worker needs them too)."""
    listed = surfaces if surfaces is not None else [make() for make in SURFACES]
    return {s.jobs.name: s.jobs for s in listed if s.jobs is not None}


def create_app(settings: Settings, pipeline: Pipeline | None = None) -> FastAPI:
    surfaces = [make() for make in SURFACES]

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = _build_services(settings, pipeline, surfaces)
        app.state.services = services
        await services.accounts.start()  # refunds credits held by requests a crash cut short
        await services.jobs.start()
        background = [asyncio.create_task(run(services)) for s in surfaces for run in s.background]
        background.append(asyncio.create_task(_sweep_video_spool(settings)))
        try:
            yield
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await services.jobs.close()
            await services.pipeline.close()
            await services.accounts.close()
            services.database.dispose()

    app = FastAPI(
        title="batchvision",
        version=__version__,
        description="Self-hosted batch vision inference server",
        lifespan=lifespan,
        docs_url=None,  # install_docs serves both pages from the package, not a CDN
        redoc_url=None,
    )
    app.state.surfaces = surfaces
    install_docs(app)
    install_error_handlers(app)
    for surface in surfaces:
        app.include_router(surface.router)
    # Inside the request context, so a body timeout's 408 carries the request id and is logged.
    app.add_middleware(
        BodyDeadlineGuard,
        idle_timeout_s=settings.body_timeout_s,
        min_rate_bytes_s=settings.min_body_rate_bytes_s,
    )
    app.add_middleware(RequestContextMiddleware)
    return app


async def _sweep_video_spool(settings: Settings) -> None:
    directory, max_age_s = spool_directory(settings), settings.video_spool_max_age_s
    await every(SPOOL_SWEEP_INTERVAL_S, lambda: sweep_spool(directory, max_age_s), "spool sweep")


def _build_services(
    settings: Settings, pipeline: Pipeline | None, surfaces: list[Surface]
) -> Services:
    """The database (migrated), then everything that shares it."""
    database = open_database(settings)
    pipeline = pipeline or Pipeline(settings)
    hooks = job_surfaces(surfaces)
    return Services(
        settings=settings,
        database=database,
        accounts=Accounts(settings, database),
        pipeline=pipeline,
        jobs=JobService(settings, database, pipeline, hooks),
    )
