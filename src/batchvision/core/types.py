"""The vocabulary every layer shares: inputs, decoded images, tasks and per-item results."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from batchvision.core.errors import BatchVisionError, ErrorCode

RGBArray = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class ItemError:
    code: ErrorCode
    message: str
    skill: str | None = None

    @classmethod
    def from_exception(cls, exc: BatchVisionError, skill: str | None = None) -> ItemError:
        return cls(exc.code, exc.message, skill)

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code.value, "message": self.message}
        if self.skill is not None:
            body["skill"] = self.skill
        return body


@dataclass
class ImageInput:
    """One image as the client sent it: raw bytes, a URL, or an error found while reading it."""

    index: int
    filename: str | None = None
    client_id: str | None = None
    data: bytes | None = None
    url: str | None = None
    error: ItemError | None = None


@dataclass(frozen=True)
class Evidence:
    """One provenance signal read from an image's bytes (`intake.provenance`): what kind, what
    was found, whether a signature proves it (only a C2PA manifest can) and whether it says the
    image is AI-generated."""

    kind: str
    found: str
    verified: bool
    says_ai: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "found": self.found,
            "verified": self.verified,
            "says_ai": self.says_ai,
        }


@dataclass
class DecodedImage:
    """Pixels in RGB, oriented upright. `width`/`height` are the full upright size of the
    original; `pixels` may be smaller when the decoder used reduced-scale (draft) decoding."""

    pixels: RGBArray
    width: int
    height: int
    format: str
    file_size: int
    metadata: dict[str, Any] = field(default_factory=dict)
    # Read from the original bytes only when a task asks for it (None: not read).
    provenance: tuple[Evidence, ...] | None = None

    @property
    def scale(self) -> tuple[float, float]:
        """Factors that map `pixels` coordinates back to the original image (x, y)."""
        return self.width / self.pixels.shape[1], self.height / self.pixels.shape[0]


@dataclass(frozen=True)
class Task:
    skill: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class ItemResult:
    index: int
    filename: str | None = None
    client_id: str | None = None
    image: dict[str, Any] | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    errors: list[ItemError] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)


@dataclass
class FrameResult(ItemResult):
    """One sampled frame of a video, analysed like an image (`index`: its place in the
    sample); `number` is its frame number in the stream, `time_s` its presentation time."""

    number: int = 0
    time_s: float = 0.0


@dataclass
class VideoInput:
    """One video as the client sent it: a file spooled while its bytes arrived (the surface
    that spooled it deletes it), a URL (fetched to a file by the pipeline), or an error."""

    index: int
    filename: str | None = None
    client_id: str | None = None
    path: Path | None = None
    url: str | None = None
    error: ItemError | None = None


@dataclass
class VideoResult:
    """A video's facts (`video`), its sampled frames in time order, and the per-video
    `summary` of their outputs; a video with `errors` has no frames (a corrupt or over-limit
    video fails as a whole)."""

    index: int
    filename: str | None = None
    client_id: str | None = None
    video: dict[str, Any] | None = None
    frames: list[FrameResult] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    errors: list[ItemError] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)


PixelBox = tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels of the upright original


def _unit(value: float) -> float:
    return round(min(max(value, 0.0), 1.0), 5)


def normalized_xyxy(box: Sequence[float], width: int, height: int) -> list[float]:
    """A pixel box as fractions of the image (0..1, clamped): the convention of surfaces whose
    clients draw on images of any size (batchvision's `box_normalized`, some compat surfaces)."""
    x1, y1, x2, y2 = box
    return [_unit(x1 / width), _unit(y1 / height), _unit(x2 / width), _unit(y2 / height)]


def normalized_xywh(box: Sequence[float], width: int, height: int) -> list[float]:
    """A pixel box as MegaDetector's [x, y, width, height] fractions from the top-left corner."""
    x1, y1, x2, y2 = normalized_xyxy(box, width, height)
    return [x1, y1, round(x2 - x1, 5), round(y2 - y1, 5)]
