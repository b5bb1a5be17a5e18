"""The Raku Sight surface (`/api/v1/inference/…`): batch and streaming prediction, signed result
assets, `{"detail": {"message", "code"}}` errors; result assets purged while the app lives."""

from __future__ import annotations

from batchvision.api.compat.raku.errors import RakuErrors
from batchvision.api.compat.raku.router import PREFIX, assets_of, router
from batchvision.api.surface import Services, Surface
from batchvision.core.periodic import every


async def purge_forever(services: Services) -> None:
    """Result folders past their retention go even when no request comes."""
    assets = assets_of(services)
    interval = services.settings.job_sweep_interval_s
    await every(interval, assets.purge_expired, "purging expired result assets")


def raku_surface() -> Surface:
    return Surface(
        name="raku",
        router=router,
        errors=RakuErrors(),
        path_prefixes=(PREFIX,),
        background=(purge_forever,),
    )
