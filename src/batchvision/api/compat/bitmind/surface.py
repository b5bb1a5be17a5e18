"""The BitMind surface (`/batch_image`, `/image`, `/health`): AI-generated image detection on
the `synthetic` skill, `{"error", "message"}` errors."""

from __future__ import annotations

from batchvision.api.compat.bitmind.errors import BitmindErrors
from batchvision.api.compat.bitmind.router import PATHS, router
from batchvision.api.surface import Surface


def bitmind_surface() -> Surface:
    return Surface(name="bitmind", router=router, errors=BitmindErrors(), path_prefixes=PATHS)
