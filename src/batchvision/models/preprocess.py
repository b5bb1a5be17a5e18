"""Pixels to model tensors: letterbox resize and channel layout, with the inverse box mapping."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image

from batchvision.core import RGBArray
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


def to_tensor(canvas: RGBArray, pre: Preprocess) -> FloatArray:
    """HWC uint8 RGB to CHW float32 in the model's channel order and value scale."""
    channels = canvas[:, :, ::-1] if pre.channel_order == "BGR" else canvas
    tensor = np.ascontiguousarray(channels.transpose(2, 0, 1), dtype=np.float32)
    if pre.scale != 1.0:
        tensor *= np.float32(pre.scale)
    return tensor
