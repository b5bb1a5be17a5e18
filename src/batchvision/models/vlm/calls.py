"""What goes to a vision-language backend and what comes back, protocol-neutral.

`VlmRequest` is the model's input (decoded images and the operation's parameters);
`PreparedCall` is it after `preprocess` (each image re-encoded once, as the backend needs it);
`VlmAnswer` is what a protocol read from the server, coordinates still as fractions of the
image it was sent; `VlmResult` is the model's output, coordinates in pixels of the original.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from batchvision.core.types import DecodedImage, PixelBox

Operation = Literal["caption", "query", "detect", "point"]
CaptionLength = Literal["short", "normal", "long"]
Point = tuple[float, float]
Size = tuple[int, int]  # width, height


@dataclass(frozen=True)
class Generation:
    """Sampling settings; None leaves the server's default."""

    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None


@dataclass(frozen=True)
class VlmRequest:
    op: Operation
    images: tuple[DecodedImage, ...]
    length: CaptionLength = "normal"  # caption
    question: str = ""  # query
    reasoning: bool = False  # query
    target: str = ""  # detect / point: the object phrase
    generation: Generation = field(default_factory=Generation)


@dataclass(frozen=True)
class SentImage:
    data_url: str  # data:image/jpeg;base64,…
    sent: Size  # the size the backend received
    original: Size  # the upright original, which results are mapped back to


@dataclass(frozen=True)
class PreparedCall:
    op: Operation
    images: tuple[SentImage, ...]
    length: CaptionLength = "normal"
    question: str = ""
    reasoning: bool = False
    target: str = ""
    generation: Generation = field(default_factory=Generation)


@dataclass(frozen=True)
class Usage:
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class VlmAnswer:
    text: str | None = None  # caption or answer
    reasoning: str | None = None
    boxes: tuple[PixelBox, ...] = ()  # fractions (0..1) of the sent image
    points: tuple[Point, ...] = ()  # fractions (0..1) of the sent image
    usage: Usage | None = None  # only what the server reported


@dataclass(frozen=True)
class VlmResult:
    model: str
    text: str | None = None
    reasoning: str | None = None
    boxes: tuple[PixelBox, ...] = ()  # pixels of the original image
    points: tuple[Point, ...] = ()  # pixels of the original image
    usage: Usage | None = None


def to_pixels(answer: VlmAnswer, call: PreparedCall, model: str) -> VlmResult:
    """Fractions of the sent image as pixels of the original (the sent image is the whole
    original, resized, so one scale per axis maps it back exactly)."""
    width, height = call.images[0].original
    boxes = tuple(
        (x1 * width, y1 * height, x2 * width, y2 * height) for x1, y1, x2, y2 in answer.boxes
    )
    points = tuple((x * width, y * height) for x, y in answer.points)
    return VlmResult(model, answer.text, answer.reasoning, boxes, points, answer.usage)
