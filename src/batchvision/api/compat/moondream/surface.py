"""The Moondream surface: the Batch API (`/v1/batch…`) and the real-time API (`/v1/caption`,
`/v1/query`, `/v1/detect`, `/v1/point`), with batchvision's error form (the page shows none),
Moondream's line rules and batch object for its jobs."""

from __future__ import annotations

from fastapi import APIRouter

from batchvision.api.compat.moondream import realtime
from batchvision.api.compat.moondream.jobs import SURFACE, MoondreamJobs
from batchvision.api.compat.moondream.router import router as batch_router
from batchvision.api.surface import NativeErrors, Surface


def moondream_surface() -> Surface:
    router = APIRouter()
    router.include_router(batch_router)
    router.include_router(realtime.router)
    return Surface(
        name=SURFACE,
        router=router,
        errors=NativeErrors(),
        path_prefixes=("/v1/batch", *realtime.REALTIME_PATHS),
        jobs=MoondreamJobs(),
    )
