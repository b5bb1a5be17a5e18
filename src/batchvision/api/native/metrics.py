"""`GET /metrics`: Prometheus metrics (`core/metrics.py` defines and documents them), plus the
one HTTP measurement every request makes (`record_request`, called by the app's middleware).

The endpoint is outside API-key auth (a scraper has no key); `metrics_token`, when set, is the
bearer token it needs instead.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Iterator

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client.core import GaugeMetricFamily
from pydantic import SecretStr
from starlette.routing import Mount
from starlette.types import Scope

from batchvision.accounts.service import unauthorized
from batchvision.api.access import bearer_token
from batchvision.api.surface import services
from batchvision.core import metrics
from batchvision.jobs.store import JobStore

router = APIRouter()

UNMATCHED = "unmatched"  # the route label of a request no route matched (a 404)


class JobStates:
    """`batchvision_jobs{state}`, read from the job store at scrape time: the database is
    shared by every process, so one reading is right however many of them run."""

    def __init__(self, store: JobStore) -> None:
        self.store = store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "batchvision_jobs", "Jobs in the job store, by state", labels=["state"]
        )
        for state, count in self.store.count_by_state().items():
            family.add_metric([state.value], count)
        yield family


@router.get(
    "/metrics",
    tags=["ops"],
    response_class=Response,
    responses={
        200: {"description": "Prometheus text format", "content": {metrics.CONTENT_TYPE: {}}},
        401: {"description": "metrics_token is set and the request did not carry it"},
    },
)
async def scrape(request: Request) -> Response:
    """Prometheus metrics in the text format; needs `Authorization: Bearer <metrics_token>`
    when that setting is set."""
    found = services(request)
    _check_token(request, found.settings.metrics_token)
    states = JobStates(found.jobs.store)
    # Off the event loop: the job count is a database query, multiprocess files are read.
    body = await asyncio.to_thread(metrics.render, [states])
    return Response(body, media_type=metrics.CONTENT_TYPE)


def _check_token(request: Request, token: SecretStr | None) -> None:
    if token is None:
        return
    sent = bearer_token(request.headers) or ""
    if not hmac.compare_digest(sent.encode(), token.get_secret_value().encode()):
        raise unauthorized("/metrics needs `Authorization: Bearer <BATCHVISION_METRICS_TOKEN>`")


def record_request(scope: Scope, status: int, seconds: float) -> None:
    """Count one answered request and its duration under its route template."""
    route = route_template(scope)
    metrics.HTTP_REQUESTS.labels(scope["method"], route, str(status)).inc()
    metrics.HTTP_SECONDS.labels(scope["method"], route).observe(seconds)


def route_template(scope: Scope) -> str:
    """The matched route's path template (`/v1/jobs/{job_id}`), never the raw path, so that
    labels stay few; a mount is its prefix and `{path}`."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if not isinstance(path, str):
        return UNMATCHED
    return f"{path}/{{path}}" if isinstance(route, Mount) else path
