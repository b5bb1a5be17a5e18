"""Each image re-encoded once per call, at the size the backend needs (CPU work)."""

from __future__ import annotations

import base64
import io

from PIL import Image

from batchvision.core.types import DecodedImage
from batchvision.models.vlm.calls import SentImage, Size
from batchvision.models.vlm.config import Grounding
from batchvision.models.vlm.grounding import sent_size

JPEG_QUALITY = 90


def jpeg_data_url(image: DecodedImage, side: int, grounding: Grounding) -> SentImage:
    """The image as a JPEG data URL within `side` (for Qwen2.5-VL, at its own resize)."""
    original: Size = (image.width, image.height)
    sent = sent_size(original, side, grounding)
    picture = Image.fromarray(image.pixels)
    if picture.size != sent:
        picture = picture.resize(sent, Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return SentImage(f"data:image/jpeg;base64,{encoded}", sent, original)
