"""The engine: one batcher per loaded model whatever its kind, and room for a kind that awaits
an HTTP call instead of running on a pool."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

import httpx
import numpy as np

from batchvision.core.settings import Settings
from batchvision.engine.engine import Engine
from batchvision.intake.decode import decode_image
from batchvision.models.base import Availability, Batching, RemoteModel
from batchvision.models.cards import ModelCard
from batchvision.models.decoders import DecodeParams, Detections
from batchvision.models.detector import DetectRequest
from batchvision.models.files import ModelFiles
from batchvision.models.kinds import KINDS
from batchvision.models.ocr import OcrPage
from batchvision.models.ocr.kinds import OcrRequest
from batchvision.models.registry import ModelRegistry
from conftest import MODELS, coco_image, make_settings
from local_http import RouteHandler, serve_routes


def test_two_kinds_each_keep_one_batcher(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, max_wait_ms=500.0)  # time for all three to join a batch
    registry = ModelRegistry(settings)
    image = decode_image(coco_image(), max_pixels=10**8)
    page = np.full((120, 400, 3), 255, np.uint8)

    async def main() -> tuple[list[Any], dict[str, int]]:
        engine = Engine(settings, registry)
        detect = [engine.infer("yolox-nano", DetectRequest(image, DecodeParams())) for _ in "abc"]
        ocr = [engine.infer("tesseract", OcrRequest(page, ["en"])) for _ in "ab"]
        results = await asyncio.gather(*detect, *ocr)
        assert engine.batcher("yolox-nano") is engine.batcher("yolox-nano")
        assert engine.batcher("yolox-nano") is not engine.batcher("tesseract")
        runs = {name: engine.batcher(name).batches_run for name in ("yolox-nano", "tesseract")}
        await engine.close()
        return list(results), runs

    results, runs = asyncio.run(main())
    assert all(isinstance(r, Detections) and len(r) for r in results[:3])
    assert all(isinstance(r, OcrPage) and r.engine == "tesseract" for r in results[3:])
    assert sorted(registry.loaded_names()) == ["tesseract", "yolox-nano"]
    # OCR reads one page per batch; the three images share one detector run
    assert runs == {"tesseract": 2, "yolox-nano": 1}


class Doubler(RemoteModel[int, int, int, int]):
    """A remote kind: each batch is one POST to a server that doubles numbers."""

    task = "double"
    family = "http"
    url = ""  # set by the test: the server's address

    @classmethod
    def inspect(cls, card: ModelCard, files: ModelFiles) -> Availability:
        return Availability("installed", cls.url)

    @classmethod
    def load(cls, card: ModelCard, files: ModelFiles) -> Self:
        return cls(card)

    @classmethod
    def batching(cls, settings: Settings) -> Batching:
        return Batching(max_size=2, max_wait_ms=1.0, concurrency=2)

    def memory_mb(self) -> int:
        return 1

    def preprocess(self, item: int) -> int:
        return item

    async def predict_remote(self, batch: list[int]) -> Sequence[int]:
        async with httpx.AsyncClient(base_url=self.url) as client:
            response = await client.post("/double", json=batch)
        doubled: list[int] = response.json()
        return doubled

    def postprocess(self, raw: int, item: int) -> int:
        return raw


def test_a_remote_kind_awaits_its_calls_within_its_concurrency(tmp_path: Path) -> None:
    lock = threading.Lock()
    in_flight = [0, 0]  # now, peak

    def double(handler: RouteHandler) -> None:
        with lock:
            in_flight[0] += 1
            in_flight[1] = max(in_flight)
        numbers = json.loads(handler.rfile.read(int(handler.headers["Content-Length"])))
        time.sleep(0.05)
        with lock:
            in_flight[0] -= 1
        handler.send(200, json.dumps([2 * n for n in numbers]).encode())

    card = ModelCard(name="doubler", task="double", family="http")
    settings = Settings(model_dirs=[MODELS], worker_threads=2)
    registry = ModelRegistry(settings, {"doubler": card}, {**KINDS, ("double", "http"): Doubler})

    async def main() -> list[int]:
        engine = Engine(settings, registry)
        try:
            return list(await asyncio.gather(*(engine.infer("doubler", n) for n in range(12))))
        finally:
            await engine.close()

    with serve_routes({"/double": double}) as url:
        Doubler.url = url
        assert asyncio.run(main()) == [2 * n for n in range(12)]
    assert in_flight[1] == 2  # two calls at once, never more
