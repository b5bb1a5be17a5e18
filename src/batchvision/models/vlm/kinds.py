"""Vision-language backends as registry models (cards with `task = "vlm"`).

The model contract (`models.base`), for a model behind a server:
- input `VlmRequest` (an operation, its decoded images and parameters);
- `preprocess` (engine CPU pool) re-encodes each image once, as a JPEG data URL at the card's
  `image_side` (for Qwen2.5-VL grounding, at the size the model resizes to) → `PreparedCall`;
- `predict_remote` makes the HTTP call through the backend's `Transport` (bounded in flight,
  retries, circuit breaker) → `VlmAnswer`; `postprocess` maps coordinates to pixels of the
  original image → `VlmResult`.
Batches are one call each; the engine's batcher keeps `max_concurrency` of them in flight and
admission refuses requests past `vlm_max_queued` images per backend (`Batching.max_queued`).

Streaming (for real-time surfaces): `stream(call)` is an async iterator of text chunks of a
caption or query, for a `PreparedCall` made by `preprocess`; it shares the transport's slots, so
streams and batch calls together keep to the backend's concurrency. `attempts` and `probe` give
the counters and the reachability `/readyz` shows.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any, ClassVar, Self

from batchvision.core.errors import BatchVisionError, ErrorCode
from batchvision.core.settings import Settings
from batchvision.models.base import Availability, Batching, RemoteModel
from batchvision.models.cards import ModelCard
from batchvision.models.files import ModelFiles
from batchvision.models.vlm.calls import PreparedCall, VlmAnswer, VlmRequest, VlmResult, to_pixels
from batchvision.models.vlm.config import DEFAULT_VLM_CARD, api_key
from batchvision.models.vlm.encode import jpeg_data_url
from batchvision.models.vlm.moondream_rest import AUTH_HEADER, MoondreamRest
from batchvision.models.vlm.openai_chat import OpenAiChat
from batchvision.models.vlm.protocol import VlmProtocol
from batchvision.models.vlm.transport import CallPolicy, Counters, Transport

_RESIDENT_MB = 1  # nothing but a connection pool lives here


class VlmModel(RemoteModel[VlmRequest, PreparedCall, VlmAnswer, VlmResult]):
    task = "vlm"
    protocol: ClassVar[type[VlmProtocol]]

    def __init__(self, card: ModelCard, settings: Settings) -> None:
        super().__init__(card)
        backend = card.remote
        assert backend.url is not None  # `load` refuses a card without one
        self.grounding = backend.grounding_for(card.family)
        self.transport = Transport(
            card.name,
            backend.url,
            self.auth_headers(api_key(backend, settings)),
            policy(card, settings),
        )
        self.client = self.protocol(self.transport, backend, self.grounding)

    @classmethod
    def auth_headers(cls, key: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"} if key else {}

    @classmethod
    def inspect(cls, card: ModelCard, files: ModelFiles) -> Availability:
        url = card.remote.url
        if url:
            return Availability("installed", f"{card.family} server at {url}")
        detail = (
            "no server configured: set BATCHVISION_VLM_URL (and BATCHVISION_VLM_PROTOCOL, "
            "BATCHVISION_VLM_MODEL)"
            if card.name == DEFAULT_VLM_CARD
            else f"no server configured: give [backend] url in the card '{card.name}'"
        )
        error = BatchVisionError(
            ErrorCode.MODEL_UNAVAILABLE,
            f"vision-language model '{card.name}' is unavailable: {detail}",
        )
        return Availability("missing", detail, error=error)

    @classmethod
    def load(cls, card: ModelCard, files: ModelFiles) -> Self:
        cls.inspect(card, files).require()
        return cls(card, files.settings)

    @classmethod
    def batching_for(cls, card: ModelCard, settings: Settings) -> Batching:
        concurrency = card.remote.max_concurrency
        return Batching(1, 0.0, concurrency=concurrency, max_queued=settings.vlm_max_queued)

    def memory_mb(self) -> int:
        return _RESIDENT_MB

    def preprocess(self, item: VlmRequest) -> PreparedCall:
        side = self.card.remote.image_side
        images = tuple(jpeg_data_url(image, side, self.grounding) for image in item.images)
        if not images:
            raise BatchVisionError(ErrorCode.INVALID_REQUEST, f"{item.op}: no image")
        return PreparedCall(
            item.op,
            images,
            item.length,
            item.question,
            item.reasoning,
            item.target,
            item.generation,
        )

    async def predict_remote(self, batch: list[PreparedCall]) -> Sequence[VlmAnswer]:
        return [await self.client.answer(call) for call in batch]  # batches hold one call

    def postprocess(self, raw: VlmAnswer, item: PreparedCall) -> VlmResult:
        return to_pixels(raw, item, self.card.name)

    def stream(self, call: PreparedCall) -> AsyncIterator[str]:
        """The text of a caption or query call in chunks, as the server streams it."""
        return self.client.stream(call)

    @property
    def counters(self) -> Counters:
        """Calls, attempts, retries and failed calls so far (benchmarks, /readyz)."""
        return self.transport.counters

    async def probe(self) -> dict[str, Any]:
        return await self.transport.probe()


class OpenAiVlm(VlmModel):
    family = "openai"
    protocol = OpenAiChat


class MoondreamVlm(VlmModel):
    family = "moondream"
    protocol = MoondreamRest

    @classmethod
    def auth_headers(cls, key: str | None) -> dict[str, str]:
        return {AUTH_HEADER: key} if key else {}


def policy(card: ModelCard, settings: Settings) -> CallPolicy:
    backend = card.remote
    return CallPolicy(
        concurrency=backend.max_concurrency,
        timeout_s=backend.timeout_s,
        attempts=settings.vlm_attempts,
        retry_base_s=settings.vlm_retry_base_s,
        breaker_failures=settings.vlm_breaker_failures,
        cooldown_s=settings.vlm_breaker_cooldown_s,
    )


VLM_KINDS = (OpenAiVlm, MoondreamVlm)
