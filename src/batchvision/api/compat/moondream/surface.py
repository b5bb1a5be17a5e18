"""The Moondream Batch surface (`/v1/batch…`): batchvision's error form (the page shows none),
Moondream's line rules and batch object for its jobs."""

from __future__ import annotations

from batchvision.api.compat.moondream.jobs import SURFACE, MoondreamJobs
from batchvision.api.compat.moondream.router import router
from batchvision.api.surface import NativeErrors, Surface


def moondream_surface() -> Surface:
    return Surface(
        name=SURFACE,
        router=router,
        errors=NativeErrors(),
        path_prefixes=("/v1/batch",),
        jobs=MoondreamJobs(),
    )
