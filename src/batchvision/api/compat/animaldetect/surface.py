"""The AnimalDetect surface (`/api/v1/batch-detect…`): batchvision's error form with every
validation problem at 400, as the page lists; stored responses purged while the app lives."""

from __future__ import annotations

from fastapi.responses import Response

from batchvision.api.compat.animaldetect.router import router
from batchvision.api.compat.animaldetect.store import DetectResultStore
from batchvision.api.surface import NativeErrors, Services, Surface, WireError
from batchvision.core.errors import ErrorCode
from batchvision.core.periodic import every

# What the native API answers with 422 or a count-based 413 is a validation error here.
_VALIDATION_CODES = frozenset({ErrorCode.INVALID_PARAMETER, ErrorCode.TOO_MANY_IMAGES})


class AnimalDetectErrors(NativeErrors):
    def render(self, error: WireError) -> Response:
        if error.code in _VALIDATION_CODES:
            error = WireError(400, ErrorCode.INVALID_REQUEST, error.message, error.headers)
        return super().render(error)


async def purge_forever(services: Services) -> None:
    """Stored responses past their expiry go even when no new request comes."""
    results = DetectResultStore(services.database)
    interval = services.settings.job_sweep_interval_s
    await every(interval, results.purge_expired, "purging expired detect results")


def animaldetect_surface() -> Surface:
    return Surface(
        name="animaldetect",
        router=router,
        errors=AnimalDetectErrors(),
        path_prefixes=("/api/v1/batch-detect", "/api/v1/batch-detect-urban"),
        background=(purge_forever,),
    )
