"""The Yandex Vision surface (`/vision/…`): batchAnalyze on the `ocr` skill, google.rpc errors."""

from __future__ import annotations

from batchvision.api.compat.yandex.errors import YandexErrors
from batchvision.api.compat.yandex.router import router
from batchvision.api.surface import Surface


def yandex_surface() -> Surface:
    return Surface(name="yandex", router=router, errors=YandexErrors(), path_prefixes=("/vision",))
