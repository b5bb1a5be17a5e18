"""A vision-language backend's card section (`[backend]` in a card with `task = "vlm"`), and the
default backend card `vlm`, built from the `BATCHVISION_VLM_*` settings.

The card's `family` is the protocol the server speaks: `openai` (chat completions with
`image_url` parts: Ollama, vLLM, llama.cpp, LM Studio, SGLang, TGI) or `moondream` (Moondream
Station / Photon / Cloud REST). A card names the environment variable holding the API key
(`api_key_env`), never the key itself.
"""

from __future__ import annotations

import os
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt

from batchvision.core.settings import Settings

Grounding = Literal["qwen2.5-vl", "norm1000", "moondream"]
OPENAI_GROUNDINGS: tuple[Grounding, ...] = ("qwen2.5-vl", "norm1000")
NATIVE_GROUNDING: Grounding = "moondream"
DEFAULT_VLM_CARD = "vlm"
DEFAULT_KEY_ENV = "BATCHVISION_VLM_API_KEY"


class VlmBackend(BaseModel):
    """Where the server is and how hard it may be pushed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str | None = Field(None, description="base URL (…/v1); None: not configured")
    model: str = Field("", description="model name sent in openai requests")
    api_key_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
    grounding: Grounding | None = Field(None, description="coordinate format; default by family")
    max_concurrency: PositiveInt = 4
    timeout_s: Annotated[float, Field(gt=0)] = 60.0
    image_side: Annotated[int, Field(ge=64, le=4096)] = 768

    def grounding_for(self, family: str) -> Grounding:
        if self.grounding is not None:
            return self.grounding
        return NATIVE_GROUNDING if family == NATIVE_GROUNDING else "qwen2.5-vl"

    def check_family(self, family: str) -> None:
        """Raises ValueError when the grounding cannot come from this protocol."""
        grounding = self.grounding_for(family)
        if family == NATIVE_GROUNDING and grounding != NATIVE_GROUNDING:
            raise ValueError(f"a {family} backend answers in its own coordinates, not {grounding}")
        if family != NATIVE_GROUNDING and grounding not in OPENAI_GROUNDINGS:
            raise ValueError(f"grounding '{grounding}' needs the {NATIVE_GROUNDING} protocol")


def default_vlm_card_fields(settings: Settings) -> dict[str, object]:
    """The card `vlm` as card fields, from the settings (listed as missing without a URL)."""
    backend = VlmBackend(
        url=settings.vlm_url,
        model=settings.vlm_model,
        api_key_env=DEFAULT_KEY_ENV,
        grounding=settings.vlm_grounding,
        max_concurrency=settings.vlm_max_concurrency,
        timeout_s=settings.vlm_timeout_s,
        image_side=settings.vlm_image_side,
    )
    return {
        "name": DEFAULT_VLM_CARD,
        "task": "vlm",
        "family": settings.vlm_protocol,
        "description": "the default vision-language backend (BATCHVISION_VLM_* settings)",
        "backend": backend,
    }


def api_key(backend: VlmBackend, settings: Settings) -> str | None:
    """The key a backend sends: the setting for the default card, else the named variable."""
    if backend.api_key_env is None:
        return None
    if backend.api_key_env == DEFAULT_KEY_ENV:
        secret = settings.vlm_api_key
        return secret.get_secret_value() if secret is not None else None
    return os.environ.get(backend.api_key_env) or None
