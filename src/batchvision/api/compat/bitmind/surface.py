"""The BitMind surface (`/batch_image`, `/image`, `/batch_video`, `/video`, `/health`,
`/v1/oauth/token`): AI-generated image and video detection on the `synthetic` skill,
`{"error", "message"}` errors."""

from __future__ import annotations

from fastapi import APIRouter

from batchvision.api.compat.bitmind import oauth, router, videos
from batchvision.api.compat.bitmind.errors import BitmindErrors
from batchvision.api.surface import Surface

# Whose errors, unmatched paths and methods this surface answers in its own language.
PATHS = ("/batch_image", "/image", "/batch_video", "/video", "/health", "/v1/oauth")


def bitmind_surface() -> Surface:
    routes = APIRouter()
    for module in (router, videos, oauth):
        routes.include_router(module.router)
    return Surface(name="bitmind", router=routes, errors=BitmindErrors(), path_prefixes=PATHS)
