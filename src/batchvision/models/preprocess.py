"""Pixels to model tensors: letterbox or stretch resize and channel layout, with the inverse box
mapping of the letterbox."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image

from batchvision.core.types import RGBArray
from batchvision.models.cards import Preprocess

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Letterbox:
    """Where the image landed on the canvas: canvas = pixels * ratio + pad."""

    ratio: float
    pad_x: float
    pad_y: float

    def to_pixels(self, boxes_xyxy: FloatArray) -> FloatArray:
        out = boxes_xyxy.astype(np.float32, copy=True)
        out[:, [0, 2]] = (out[:, [0, 2]] - self.pad_x) / self.ratio
        out[:, [1, 3]] = (out[:, [1, 3]] - self.pad_y) / self.ratio
        return out


def letterbox(
    pixels: RGBArray, size: tuple[int, int], pre: Preprocess
) -> tuple[RGBArray, Letterbox]:
    """Resize keeping aspect ratio into a `size` (width, height) canvas of the pad value."""
    canvas_w, canvas_h = size
    height, width = pixels.shape[:2]
    ratio = min(canvas_w / width, canvas_h / height)
    new_w, new_h = max(1, round(width * ratio)), max(1, round(height * ratio))
    resized = pixels
    if (new_w, new_h) != (width, height):
        resized = np.asarray(
            Image.fromarray(pixels).resize((new_w, new_h), Image.Resampling.BILINEAR)
        )
    if pre.letterbox == "topleft":
        pad_x, pad_y = 0, 0
    else:
        pad_x, pad_y = (canvas_w - new_w) // 2, (canvas_h - new_h) // 2
    canvas = np.full((canvas_h, canvas_w, 3), pre.pad_value, dtype=np.uint8)
    canvas[pad_y : pad_y + new_h, pad_x : pad_x + new_w] = resized
    return canvas, Letterbox(ratio=ratio, pad_x=float(pad_x), pad_y=float(pad_y))


def stretch(pixels: RGBArray, size: tuple[int, int]) -> RGBArray:
    """Resize to `size` (width, height) ignoring the aspect ratio, bilinear WITHOUT antialiasing.

    This is torchvision's `resize(antialias=False)` (half-pixel centres, edge clamped), what
    SpeciesNet's classifier was trained and is run with; Pillow's bilinear filter antialiases when
    shrinking, which would feed the model smoother crops than it knows.
    """
    width, height = size
    rows = _taps(pixels.shape[0], height)
    cols = _taps(pixels.shape[1], width)
    source = pixels.astype(np.float32)
    top = source[rows[0]] * (1 - rows[2])[:, None, None] + source[rows[1]] * rows[2][:, None, None]
    out = top[:, cols[0]] * (1 - cols[2])[None, :, None] + top[:, cols[1]] * cols[2][None, :, None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _taps(
    size_in: int, size_out: int
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], FloatArray]:
    """For each output index: the two source indices and the weight of the second."""
    centres = (np.arange(size_out, dtype=np.float32) + 0.5) * (size_in / size_out) - 0.5
    centres = np.clip(centres, 0.0, None)
    low = np.minimum(centres.astype(np.intp), size_in - 1)
    high = np.minimum(low + 1, size_in - 1)
    return low, high, (centres - low).astype(np.float32)


def to_tensor(canvas: RGBArray, pre: Preprocess) -> FloatArray:
    """HWC uint8 RGB to float32 in the model's layout (CHW or HWC), channel order and scale."""
    channels = canvas[:, :, ::-1] if pre.channel_order == "BGR" else canvas
    if pre.layout == "NCHW":
        channels = channels.transpose(2, 0, 1)
    tensor = np.ascontiguousarray(channels, dtype=np.float32)
    if pre.scale != 1.0:
        tensor *= np.float32(pre.scale)
    return tensor
