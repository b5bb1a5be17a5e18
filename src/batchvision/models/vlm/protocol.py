"""What every backend protocol provides: one answer per call, or a call's text as a stream."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from typing import Any

from batchvision.core.errors import BatchVisionError, ErrorCode
from batchvision.models.vlm.calls import PreparedCall, Usage, VlmAnswer
from batchvision.models.vlm.config import Grounding, VlmBackend
from batchvision.models.vlm.grounding import SHOWN_CHARS
from batchvision.models.vlm.transport import Transport


class VlmProtocol(ABC):
    def __init__(self, transport: Transport, backend: VlmBackend, grounding: Grounding) -> None:
        self.transport = transport
        self.backend = backend
        self.grounding = grounding

    @abstractmethod
    async def answer(self, call: PreparedCall) -> VlmAnswer:
        """The server's whole answer to one call."""

    @abstractmethod
    def stream(self, call: PreparedCall) -> AsyncIterator[str]:
        """A caption's or answer's text in chunks, as the server sends them."""


def bad_answer(payload: Any, why: str) -> BatchVisionError:
    return BatchVisionError(
        ErrorCode.PROCESSING_ERROR,
        f"the vision-language backend's answer could not be read ({why}): "
        f"{str(payload)[:SHOWN_CHARS]!r}",
    )


def read_usage(payload: Any, input_key: str, output_key: str) -> Usage | None:
    """Token counts only when the server reported both as whole numbers (never estimated)."""
    if not isinstance(payload, dict):
        return None
    tokens_in, tokens_out = payload.get(input_key), payload.get(output_key)
    if type(tokens_in) is int and type(tokens_out) is int and tokens_in >= 0 and tokens_out >= 0:
        return Usage(tokens_in, tokens_out)
    return None


def text_field(payload: Any, key: str) -> str:
    value = payload.get(key) if isinstance(payload, dict) else None
    if not isinstance(value, str):
        raise bad_answer(payload, f"no text '{key}'")
    return value
