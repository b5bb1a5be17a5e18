"""What a surface is to the app: its routes, its one error table, its job hooks, its background
tasks; and the one way routes reach the shared services.

A surface is one folder (`api/native/`, `api/compat/<service>/`) whose `surface.py` builds one
`Surface`; `api/app.py` lists them, once each. Every error on a surface's paths — raised by a
route, by FastAPI's request validation, or an unmatched path or method under its prefixes —
is answered by `api/errors.py` through that surface's `ErrorTable`, after the one rule that
holds everywhere: a 5xx body carries no internal detail.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import Engine

from batchvision.accounts.service import Accounts
from batchvision.core.errors import ErrorCode
from batchvision.core.settings import Settings
from batchvision.pipeline import Pipeline
from batchvision.work.service import JobService
from batchvision.work.surface import JobSurface


@dataclass(frozen=True)
class WireError:
    """An error on its way to a client: status, code and a message that is safe to show."""

    status: int
    code: ErrorCode
    message: str
    headers: dict[str, str] | None = None


class ErrorTable(Protocol):
    """How one surface writes an error: its status and body for each `ErrorCode`."""

    def render(self, error: WireError) -> Response: ...


class NativeErrors:
    """batchvision's own `{"error": {"code", "message"}}` at the code's status."""

    def render(self, error: WireError) -> Response:
        body = {"error": {"code": error.code.value, "message": error.message}}
        return JSONResponse(body, status_code=error.status, headers=error.headers)


@dataclass
class Services:
    """What the app factory builds once and every route shares."""

    settings: Settings
    database: Engine
    accounts: Accounts
    pipeline: Pipeline
    jobs: JobService


def services(request: Request) -> Services:
    """The shared services, for any route of any surface."""
    found: Services = request.app.state.services
    return found


Background = Callable[[Services], Coroutine[Any, Any, None]]


@dataclass(frozen=True)
class Surface:
    """One API surface, as the app mounts it."""

    name: str
    router: APIRouter
    errors: ErrorTable
    path_prefixes: Sequence[str] = ()  # whose unmatched paths this surface answers
    jobs: JobSurface | None = None  # for surfaces that run batch jobs
    background: Sequence[Background] = field(default_factory=tuple)  # run while the app lives


def surface_for_path(surfaces: Sequence[Surface], path: str) -> Surface | None:
    """The surface whose longest prefix matches `path`, or None."""
    best: tuple[int, Surface] | None = None
    for surface in surfaces:
        for prefix in surface.path_prefixes:
            if _under(path, prefix) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), surface)
    return best[1] if best else None


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix.rstrip("/") + "/")
