"""The ASGI application: one factory, settings passed in, surfaces mounted as routers."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from batchvision import __version__
from batchvision.api import native
from batchvision.api.errors import error_response, install_error_handlers
from batchvision.errors import ErrorCode
from batchvision.pipeline import Pipeline
from batchvision.settings import Settings

log = logging.getLogger(__name__)
access_log = logging.getLogger("batchvision.access")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestIdMiddleware:
    """Gives every response an X-Request-ID (echoing a well-formed client one) and logs one
    access line per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = self._request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        start = time.perf_counter()
        status = 500
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
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
            await response(scope, receive, send_with_id)
        finally:
            took = (time.perf_counter() - start) * 1000.0
            access_log.info(
                "%s %s %d %.1fms id=%s", scope["method"], scope["path"], status, took, request_id
            )

    @staticmethod
    def _request_id(scope: Scope) -> str:
        for name, value in scope.get("headers", []):
            if name == b"x-request-id":
                text: str = value.decode("latin-1")
                if _REQUEST_ID.match(text):
                    return text
        return str(uuid.uuid4().hex)


def create_app(settings: Settings, pipeline: Pipeline | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.pipeline = pipeline or Pipeline(settings)
        try:
            yield
        finally:
            await app.state.pipeline.close()

    app = FastAPI(
        title="batchvision",
        version=__version__,
        description="Self-hosted batch vision inference server",
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.include_router(native.router)
    app.add_middleware(RequestIdMiddleware)
    return app
