"""The native surface: `/v1/analyze`, `/v1/jobs`, `/v1/uploads`, keys, usage, skills, models,
health and metrics, and the playground page at `/`, in batchvision's own error form."""

from __future__ import annotations

from fastapi import APIRouter

from batchvision.api.native import analyze, jobs, keys, metrics
from batchvision.api.native.job_lines import SURFACE, NativeJobs
from batchvision.api.playground import router as playground
from batchvision.api.surface import NativeErrors, Surface


def native_surface() -> Surface:
    router = APIRouter()
    for module in (analyze, keys, jobs, metrics, playground):
        router.include_router(module.router)
    return Surface(
        name=SURFACE,
        router=router,
        errors=NativeErrors(),
        path_prefixes=("/v1",),
        jobs=NativeJobs(),
    )
